//! A running `nsh up` for tests: started with its output piped, read up to the line that says
//! it runs, and stopped with Ctrl-C however the test ends.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// Stopped on drop: Ctrl-C first (so it stops its gateway and daemons), then kill.
pub struct Up(pub Child);

impl Drop for Up {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.0.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `command` (an `nsh up …`) and reads its output up to `nsh up is running`; returns the
/// process, the rest of its output, and the lines read.
pub fn start(mut command: Command) -> (Up, BufReader<ChildStdout>, Vec<String>) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let up = Up(child);
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        assert_ne!(
            stdout.read_line(&mut line).unwrap(),
            0,
            "nsh up ended early:\n{}",
            lines.join("\n")
        );
        let line = line.trim_end().to_owned();
        let last = line.starts_with("nsh up is running");
        lines.push(line);
        if last {
            return (up, stdout, lines);
        }
    }
}
