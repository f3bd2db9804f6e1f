//! The README's run command: `jwtgate dev` prints curl lines that give 200 and 403, with JWTs
//! and with opaque tokens (introspected at the dev issuer).

use std::process::Stdio;
use std::time::Duration;

use crate::support::wait_until;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_prints_working_curl_lines() {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_jwtgate"))
        .args(["dev", "--any-port"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut tokens = Vec::new();
    let mut urls = Vec::new();
    let mut admin = String::new();
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some((_, rest)) = line.split_once("admin http://") {
                admin = rest.split('/').next().unwrap_or("").to_string();
            }
            if let Some(rest) = line.trim().strip_prefix("curl -i -H 'Authorization: Bearer ") {
                let (token, url) = rest.split_once("' ").unwrap();
                tokens.push(token.to_string());
                urls.push(url.split_whitespace().next().unwrap_or("").to_string());
                if tokens.len() == 4 {
                    break;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read).await.expect("dev printed its curl lines");
    assert_eq!(tokens.len(), 4);
    assert!(!tokens[2].contains('.'), "the third and fourth are opaque: {}", tokens[2]);
    let client = crate::support::http_client();
    let mut statuses = Vec::new();
    for (t, u) in tokens.iter().zip(&urls) {
        let status = || async { client.get(u).bearer_auth(t).send().await.unwrap().status().as_u16() };
        wait_until("the dev gateway has its keys", || async { status().await != 503 }).await;
        statuses.push(status().await);
    }
    assert_eq!(statuses, vec![200, 403, 200, 403]);
    // dev runs from the file it wrote: a reload re-reads it.
    let r = client.post(format!("http://{admin}/reload")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(0));
}
