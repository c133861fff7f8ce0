-- (PostgreSQL only: servers sharing a SQLite file are on one machine and watch the file's data
-- version instead. This file keeps both schemas at the same version.)
SELECT 1;
