//! Tests of the authentication primitives: published and PostgreSQL-produced vectors,
//! complete exchanges between the client and server sides (ours and postgres-protocol's
//! client), and malformed input.

mod exchange;
mod malformed;
mod postgres_protocol_client;
mod postgres_vectors;
mod rfc7677;

use crate::{AuthError, ScramClient, ScramServer, ScramVerified};

/// Runs a complete exchange and returns what the server verified. The client checks the
/// server's signature when the server accepted it.
fn run_exchange(
    client: &mut ScramClient,
    server: &mut ScramServer,
) -> Result<ScramVerified, AuthError> {
    let server_first = server.client_first("SCRAM-SHA-256", &client.client_first())?;
    let client_final = client.server_first(&server_first)?;
    let verified = server.client_final(&client_final)?;
    client.server_final(&verified.server_final)?;
    Ok(verified)
}

/// The value of attribute `name` in a SCRAM message.
fn attribute(message: &[u8], name: char) -> String {
    let text = std::str::from_utf8(message).unwrap();
    text.split(',')
        .find_map(|part| part.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name}= in {text}"))
        .to_owned()
}
