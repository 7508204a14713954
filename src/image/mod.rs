//! Images: references, the registry client, the local layer store and the layer applier.

pub mod auth;
pub mod credentials;
pub mod digest;
pub mod ecr;
pub mod gc;
pub mod manifest;
pub mod pipeline;
pub mod reference;
pub mod registry;
pub mod store;
pub mod unpack;

pub use store::{Image, PullBehavior, Store, StoreOptions};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image {image:?}: {msg}")]
    Reference { image: String, msg: String },
    #[error("pull {image}: {source}")]
    Registry {
        image: String,
        #[source]
        source: registry::RegistryError,
    },
    #[error("pull {image}: {msg}")]
    Verify { image: String, msg: String },
    #[error("pull {image}: {msg}")]
    Unsupported { image: String, msg: String },
    #[error("image store: {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}
