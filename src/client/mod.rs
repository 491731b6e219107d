//! The client side: the protocol connection (handshake, requests, merged events).

mod connection;

pub use connection::{
    ConnectOptions, Connection, ConnectionError, Event, Welcome, EVENT_QUEUE_CAPACITY,
};
