//! Provider webhooks. They carry no JWT: each is authenticated by its provider's signature over
//! the raw body, and finds whose data it is from the payload itself.

pub mod elevenlabs;
pub mod stripe;
