//! One integration-test binary; each module tests one capability end to end.

mod harness;

mod cli;
mod config_files;
mod edge;
mod faults;
mod governance;
mod proxy;
mod thirdparty;
