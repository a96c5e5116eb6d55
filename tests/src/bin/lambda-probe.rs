//! A stand-in function for the harness's own tests of Lambda's limits: speaks the Runtime API with nothing but the
//! standard library, and does what each event asks: `{"sleepMs": n}` answers late, `{"responseBytes": n}`
//! answers that large, `{"openFiles": true}` opens files until refused and answers how many, `{"allocateMb": n}`
//! touches that much memory.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

fn request(api: &str, method: &str, path: &str, body: &[u8]) -> (Vec<(String, String)>, Vec<u8>) {
    let mut stream = TcpStream::connect(api).expect("the Runtime API");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {api}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .and_then(|_| stream.write_all(body))
        .expect("request sent");
    let mut reader = BufReader::new(stream);
    let mut headers = Vec::new();
    let mut line = String::new();
    while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) && line != "\r\n" {
        if let Some((name, value)) = line.trim_end().split_once(':') {
            headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
        }
        line.clear();
    }
    let mut response = Vec::new();
    let _ = reader.read_to_end(&mut response);
    (headers, response)
}

fn main() {
    let api = std::env::var("AWS_LAMBDA_RUNTIME_API").expect("AWS_LAMBDA_RUNTIME_API");
    loop {
        let (headers, body) = request(&api, "GET", "/2018-06-01/runtime/invocation/next", b"");
        let id = headers
            .iter()
            .find(|(name, _)| name == "lambda-runtime-aws-request-id")
            .map(|(_, v)| v.clone())
            .expect("a request id");
        let event: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if let Some(ms) = event["sleepMs"].as_u64() {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        let answer = if let Some(bytes) = event["responseBytes"].as_u64() {
            serde_json::json!({ "padding": "x".repeat(bytes as usize) })
        } else if event["openFiles"] == true {
            let mut open = Vec::new();
            let refused = loop {
                match std::fs::File::open("/dev/null") {
                    Ok(file) => open.push(file),
                    Err(error) => break error.to_string(),
                }
                if open.len() > 100_000 {
                    break "no limit".to_owned();
                }
            };
            serde_json::json!({ "opened": open.len(), "refused": refused })
        } else if let Some(mb) = event["allocateMb"].as_u64() {
            let mut memory = vec![0u8; (mb * 1024 * 1024) as usize];
            for page in memory.chunks_mut(4096) {
                page[0] = 1;
            }
            serde_json::json!({ "allocatedMb": mb, "checksum": memory.iter().step_by(4096).map(|b| *b as u64).sum::<u64>() })
        } else {
            serde_json::json!({ "echo": event })
        };
        request(
            &api,
            "POST",
            &format!("/2018-06-01/runtime/invocation/{id}/response"),
            answer.to_string().as_bytes(),
        );
    }
}
