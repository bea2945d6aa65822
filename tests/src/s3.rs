//! A real S3-compatible server on loopback for tests: moto's server
//! (`pip install "moto[server]"`, which `.ci/run` does).
//!
//! Without moto a test that needs it is skipped with a message, except
//! when `CI` is set: there a missing moto fails the test.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running moto server, stopped when dropped.
pub struct Moto {
    child: Child,
    /// Its address.
    pub addr: SocketAddr,
}

impl Moto {
    /// Starts moto on a free loopback port; `None` (after saying why) when
    /// moto is not installed and `CI` is not set.
    pub fn start() -> Option<Moto> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let spawned = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let available = Command::new("python3")
            .args(["-c", "import moto.server"])
            .status()
            .is_ok_and(|s| s.success());
        let child = match (spawned, available) {
            (Ok(child), true) => child,
            (Ok(mut child), false) => {
                let _ = child.kill();
                return missing();
            }
            (Err(_), _) => return missing(),
        };
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let started = Instant::now();
        while TcpStream::connect(addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "moto did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(Moto { child, addr })
    }

    /// `http://addr`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates a bucket (S3 `CreateBucket`: `PUT /<bucket>`).
    pub fn create_bucket(&self, bucket: &str) {
        let mut stream = TcpStream::connect(self.addr).expect("connect moto");
        write!(
            stream,
            "PUT /{bucket} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .expect("write");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("read");
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "create bucket: {answer}"
        );
    }
}

fn missing() -> Option<Moto> {
    if std::env::var_os("CI").is_some() {
        panic!("moto is not installed (pip install \"moto[server]\"); CI must run the S3 tests");
    }
    eprintln!("skipped: moto is not installed (pip install \"moto[server]\")");
    None
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
