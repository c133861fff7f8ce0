-- Names of the site-local connections each agent reported (names only, never values).
ALTER TABLE agents ADD COLUMN connections TEXT NOT NULL DEFAULT '[]';
