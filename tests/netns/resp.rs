//! A tiny blocking RESP client for nodes inside namespaces (the test's own thread cannot reach
//! a namespace's loopback, so the socket is made inside it and used from here).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::lab::in_namespace;

/// How long connecting to a node's RPC port may take.
const CONNECT_DEADLINE: Duration = Duration::from_secs(20);

/// A RESP value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// `+OK` and the like.
    Simple(String),
    /// `-ERR ...`.
    Error(String),
    /// `:n`.
    Int(i64),
    /// `$n` (None for a null).
    Bulk(Option<String>),
    /// `*n`.
    Array(Vec<Value>),
}

impl Value {
    /// The text of a bulk or simple string.
    pub fn text(&self) -> Option<&str> {
        match self {
            Value::Bulk(Some(text)) | Value::Simple(text) => Some(text),
            _ => None,
        }
    }
}

/// A connection to a node's RPC port.
pub struct Rpc {
    /// The socket, buffered for reading.
    stream: BufReader<TcpStream>,
}

impl Rpc {
    /// Connects to 127.0.0.1:`port` inside namespace `ns`.
    pub fn connect_in(ns: &str, port: u16) -> Rpc {
        let stream = in_namespace(ns, move || {
            let start = Instant::now();
            loop {
                match TcpStream::connect(("127.0.0.1", port)) {
                    Ok(stream) => return stream,
                    Err(err) if start.elapsed() > CONNECT_DEADLINE => {
                        panic!("cannot reach the rpc port: {err}")
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        });
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        Rpc {
            stream: BufReader::new(stream),
        }
    }

    /// Sends one command and reads its reply.
    pub fn call(&mut self, args: &[&str]) -> Value {
        let mut frame = format!("*{}\r\n", args.len());
        for arg in args {
            frame.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        self.stream
            .get_mut()
            .write_all(frame.as_bytes())
            .expect("rpc write");
        self.read()
    }

    fn read(&mut self) -> Value {
        let mut line = String::new();
        self.stream.read_line(&mut line).expect("rpc read");
        let line = line.trim_end();
        let (kind, rest) = line.split_at(1);
        match kind {
            "+" => Value::Simple(rest.to_owned()),
            "-" => Value::Error(rest.to_owned()),
            ":" => Value::Int(rest.parse().expect("integer")),
            "$" => {
                let len: i64 = rest.parse().expect("length");
                if len < 0 {
                    return Value::Bulk(None);
                }
                let mut body = vec![0; len as usize + 2];
                self.stream.read_exact(&mut body).expect("bulk");
                body.truncate(len as usize);
                Value::Bulk(Some(String::from_utf8_lossy(&body).into_owned()))
            }
            "*" => {
                let len: i64 = rest.parse().expect("length");
                Value::Array((0..len.max(0)).map(|_| self.read()).collect())
            }
            other => panic!("unexpected reply {other}{rest}"),
        }
    }

    /// `INFO` as a map.
    pub fn info(&mut self) -> HashMap<String, String> {
        let text = self.call(&["INFO"]).text().unwrap_or_default().to_owned();
        text.lines()
            .filter_map(|line| line.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect()
    }

    /// One `INFO` field.
    pub fn field(&mut self, name: &str) -> String {
        self.info().remove(name).unwrap_or_default()
    }

    /// `ADDRS` as (address, kind) pairs, best first.
    pub fn addrs(&mut self) -> Vec<(String, String)> {
        match self.call(&["ADDRS"]) {
            Value::Array(rows) => rows
                .into_iter()
                .filter_map(|row| match row {
                    Value::Array(pair) if pair.len() == 2 => {
                        Some((pair[0].text()?.to_owned(), pair[1].text()?.to_owned()))
                    }
                    _ => None,
                })
                .collect(),
            other => panic!("ADDRS answered {other:?}"),
        }
    }

    /// `PEERS` as peer id -> remote addresses of its connections.
    pub fn peers(&mut self) -> HashMap<String, Vec<String>> {
        match self.call(&["PEERS"]) {
            Value::Array(rows) => rows
                .into_iter()
                .filter_map(|row| match row {
                    Value::Array(items) => {
                        let texts: Vec<String> = items
                            .iter()
                            .filter_map(|v| v.text().map(str::to_owned))
                            .collect();
                        let (peer, addrs) = texts.split_first()?;
                        Some((peer.clone(), addrs.to_vec()))
                    }
                    _ => None,
                })
                .collect(),
            other => panic!("PEERS answered {other:?}"),
        }
    }

    /// `SET key value`.
    pub fn set(&mut self, key: &str, value: &str) {
        let reply = self.call(&["SET", key, value]);
        assert_eq!(reply, Value::Simple("OK".into()), "SET {key}");
    }

    /// `GET key`.
    pub fn get(&mut self, key: &str) -> Option<String> {
        self.call(&["GET", key]).text().map(str::to_owned)
    }
}
