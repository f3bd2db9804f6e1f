//! Keeps WSO2 API Manager's Asgardeo key-manager registration in step with the configuration
//! and the live discovery document, through APIM's Admin REST API. This module's status type is
//! what the admin listener's `/status` reports.

pub mod status;
pub mod settings;
pub mod apim;
pub mod desired;
pub mod reconcile;
