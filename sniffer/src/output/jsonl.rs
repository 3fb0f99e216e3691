//! `--output jsonl`: one JSON [`Observation`] per line, flushed per line.

use std::io::{self, Write};

use trafficmap_api::report::Observation;

/// Writes observations as JSON Lines.
#[derive(Debug)]
pub struct JsonlWriter<W: Write> {
    out: W,
}

impl<W: Write> JsonlWriter<W> {
    /// Writes to `out`.
    pub fn new(out: W) -> Self {
        JsonlWriter { out }
    }

    /// Writes one observation and flushes, so a reader sees it at once.
    pub fn write(&mut self, observation: &Observation) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, observation)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }

    /// The underlying writer.
    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use trafficmap_api::observed::Protocol;
    use trafficmap_api::report::{ClientId, ConnectionObservation};

    use super::*;

    #[test]
    fn each_observation_is_one_line_of_the_api_schema() {
        let observation = Observation::Connection(ConnectionObservation {
            client: ClientId {
                ip: "10.0.0.5".parse().expect("ip"),
                pod_uid: None,
            },
            server_ip: "10.0.0.9".parse().expect("ip"),
            server_port: 443,
            protocol: Protocol::Tcp,
            first_seen_ms: 1,
            last_seen_ms: 1,
        });
        let mut writer = JsonlWriter::new(Vec::new());
        writer.write(&observation).expect("write");
        writer.write(&observation).expect("write");
        let text = String::from_utf8(writer.into_inner()).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let back: Observation = serde_json::from_str(lines[0]).expect("parses back");
        assert_eq!(back, observation);
        assert!(lines[0].contains(r#""type":"connection""#));
    }
}
