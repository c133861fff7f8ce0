//! End-to-end tests: the real `tern` binary, real processes, real databases.

mod harness;

mod across_runs;
mod agents;
mod api;
mod browser;
mod browser_views;
mod bundles;
mod chaos;
mod cli_errors;
mod client_ops;
mod connections;
mod dag_files;
mod data_tasks;
mod deploy;
mod flow;
mod fuzz;
mod hybrid_etl;
mod links;
mod mapping;
mod netns;
mod notifications;
mod python_envs;
mod recovery;
mod runs;
mod schedules;
mod secrets;
mod sensors;
mod shared_logs;
mod variables;
mod web;
