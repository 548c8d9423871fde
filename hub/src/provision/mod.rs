//! Self-service provisioning (`[provision]`): a customer's IT manager fills in the design's form
//! on the dashboard; the hub makes a facility id, a bootstrap token and the edge's config in one
//! transaction, then (as jobs, any replica) orders the hardware from the procurement webhook,
//! writes the edge's image from the golden image of its hardware size, emails the IT contact
//! the link, sha256 and steps, and follows the box on a setup page until it enrolls, raising an
//! alert when it has not N days after its image was ready.

pub mod config;
pub mod edge_config;
pub mod form;
pub mod image;
pub mod instructions;
pub mod jobs;
pub mod request;
