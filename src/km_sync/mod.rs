//! Keeps WSO2 API Manager's Asgardeo key-manager registration in step with the configuration
//! and the live discovery document, through APIM's Admin REST API. This module's status type is
//! what the admin listener's `/status` reports.

pub mod status;
