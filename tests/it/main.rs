//! One integration-test binary; each module tests one capability end to end.

mod harness;

mod admin;
mod approvals;
mod budgets;
mod cli;
mod config_files;
mod docs;
mod durability;
mod edge;
mod faults;
mod governance;
mod layers;
mod llm;
mod mediation;
mod otlp;
mod pg;
mod provider;
mod proxy;
mod quickstart;
mod replicas;
mod scan_corpus;
mod scans;
mod secrets_at_rest;
mod store;
mod telemetry;
mod thirdparty;
