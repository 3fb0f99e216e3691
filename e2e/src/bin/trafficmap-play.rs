//! `trafficmap-play`: a scenario workload in a container image (`make images`). It plays the
//! workload's calls, as client and as server, with the code of `trafficmap-node traffic`, and
//! exits 0 on SIGTERM or SIGINT at once, so that its pod stops without waiting for SIGKILL (as
//! PID 1 of a container, the default actions would ignore both).

use std::process::ExitCode;
use std::{io, mem, ptr, thread};

use clap::Parser;
use trafficmap_e2e::sim::traffic::TrafficArgs;

#[derive(Parser)]
#[command(
    name = "trafficmap-play",
    version,
    about = "Plays a scenario workload's calls: listens on its ports (TCP and UDP echo) and calls others",
    after_help = "\
Example:
  trafficmap-play --listen 8080/TCP --call server.demo.svc.cluster.local:80/TCP/every=1s"
)]
struct Cli {
    #[command(flatten)]
    traffic: TrafficArgs,
}

/// The signals that stop the workload.
fn stop_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set it is given; sigaddset takes valid signals.
    unsafe {
        let mut set: libc::sigset_t = mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        set
    }
}

/// Blocks the stop signals in this thread and every thread it starts from now on, so that
/// only [`wait_for_stop`] receives them.
fn block(set: &libc::sigset_t) -> io::Result<()> {
    // SAFETY: a valid set; the old mask is not wanted.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, set, ptr::null_mut()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Waits for one of the (blocked) stop signals.
fn wait_for_stop(set: &libc::sigset_t) -> io::Result<libc::c_int> {
    let mut signal = 0;
    // SAFETY: a valid set, and a place for the signal number.
    let rc = unsafe { libc::sigwait(set, &mut signal) };
    if rc == 0 {
        Ok(signal)
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stop = stop_signals();
    if let Err(e) = block(&stop) {
        eprintln!("trafficmap-play: block SIGTERM: {e}");
        return ExitCode::FAILURE;
    }
    thread::spawn(move || {
        cli.traffic.run();
        std::process::exit(0);
    });
    match wait_for_stop(&stop) {
        Ok(signal) => {
            eprintln!("trafficmap-play: signal {signal}, exiting");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("trafficmap-play: wait for SIGTERM: {e}");
            ExitCode::FAILURE
        }
    }
}
