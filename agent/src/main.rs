//! `omega-agent`: the guest agent of frontier branes.
//!
//! As PID 1 of a guest initramfs (`/init`): mounts `/proc`, `/sys`, `/dev`
//! and `/tmp`, opens the host channel (the serial port named by
//! `omega.agent.port=` on the kernel command line, default `/dev/ttyS1`,
//! in raw mode; or `vsock:PORT`: listen on that vsock port and accept the
//! host's connection), after loading the modules listed in
//! `/lib/modules/order`; serves the host (see `omega_agent::proto`), then powers
//! the guest off. Anywhere else: `omega-agent --stdio` serves on
//! stdin/stdout and `omega-agent --port PATH` on a serial device (tests).

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::process::ExitCode;

use omega_agent::agent::{self, Options, Stop};

fn say(msg: &str) {
    eprintln!("omega-agent: {msg}");
}

fn mount(source: &str, target: &str, fstype: &str) {
    let _ = std::fs::create_dir_all(target);
    let (Ok(s), Ok(t), Ok(f)) = (
        CString::new(source),
        CString::new(target),
        CString::new(fstype),
    ) else {
        return;
    };
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        say(&format!(
            "mount {fstype} on {target}: {}",
            std::io::Error::last_os_error()
        ));
    }
}

/// PID 1 setup: filesystems and the environment the workload sees.
fn init() {
    mount("proc", "/proc", "proc");
    mount("sysfs", "/sys", "sysfs");
    mount("devtmpfs", "/dev", "devtmpfs");
    mount("tmpfs", "/tmp", "tmpfs");
    // SAFETY: single-threaded at this point.
    unsafe {
        std::env::set_var("PATH", "/bin:/sbin:/usr/bin:/usr/sbin");
        std::env::set_var("HOME", "/root");
    }
    // Reap orphans the workload leaves behind (the workload itself is
    // waited for by the agent, so only peek-and-reap others).
    std::thread::spawn(|| {
        loop {
            std::thread::sleep(std::time::Duration::from_millis(500));
            reap_orphans();
        }
    });
}

fn reap_orphans() {
    for _ in 0..64 {
        // SAFETY: zeroed siginfo_t is a valid out-parameter for waitid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: peek at any exited child without reaping it.
        let rc = unsafe {
            libc::waitid(
                libc::P_ALL,
                0,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: si_pid is valid after a successful waitid.
        let pid = unsafe { info.si_pid() };
        if rc != 0 || pid == 0 {
            return;
        }
        // The agent's own children are direct children in their own
        // process group whose group id is their pid: leave those to it.
        // SAFETY: getpgid on a zombie pid is fine.
        if unsafe { libc::getpgid(pid) } == pid {
            return;
        }
        let mut status = 0;
        // SAFETY: reap that one pid.
        unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    }
}

/// Load the kernel modules listed in `/lib/modules/order`, in order.
fn load_modules() {
    let Ok(order) = std::fs::read_to_string("/lib/modules/order") else {
        return;
    };
    for name in order
        .lines()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .take(256)
    {
        let path = format!("/lib/modules/{name}");
        let Ok(file) = File::open(&path) else {
            say(&format!("module {path}: cannot open"));
            continue;
        };
        let params = c"";
        // SAFETY: finit_module(2) with an open module file and empty params.
        let rc =
            unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), params.as_ptr(), 0) };
        let err = std::io::Error::last_os_error();
        if rc != 0 && err.raw_os_error() != Some(libc::EEXIST) {
            say(&format!("module {path}: {err}"));
        }
    }
}

/// Listen on vsock `port` (any CID) and accept the host's one connection.
fn vsock_accept(port: u32) -> std::io::Result<File> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket we own.
    let listener = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: zeroed sockaddr_vm is valid; fields set below.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_port = port;
    addr.svm_cid = libc::VMADDR_CID_ANY;
    let len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
    // SAFETY: addr is a valid sockaddr_vm of `len` bytes.
    let rc = unsafe {
        libc::bind(
            listener.as_raw_fd(),
            (&raw const addr).cast::<libc::sockaddr>(),
            len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: listen/accept on our bound socket.
    if unsafe { libc::listen(listener.as_raw_fd(), 1) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    loop {
        // SAFETY: accept without peer address.
        let conn = unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if conn >= 0 {
            // SAFETY: conn is a fresh connected socket we own.
            return Ok(unsafe { File::from_raw_fd(conn) });
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Put a serial device in raw mode and drop stale input.
fn raw(port: &File) -> std::io::Result<()> {
    let fd = port.as_raw_fd();
    // SAFETY: zeroed termios is a valid out-parameter.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd is an open file descriptor.
    if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: t was filled by tcgetattr.
    unsafe {
        libc::cfmakeraw(&mut t);
    }
    t.c_cflag |= libc::CLOCAL | libc::CREAD;
    t.c_cflag &= !libc::CRTSCTS;
    t.c_cc[libc::VMIN] = 1;
    t.c_cc[libc::VTIME] = 0;
    // SAFETY: fd is open; t is a valid termios.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is open.
    unsafe { libc::tcflush(fd, libc::TCIFLUSH) };
    Ok(())
}

fn cmdline_opt(cmdline: &str, key: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_string)
}

fn power_off() -> ! {
    // SAFETY: sync and reboot(2) as PID 1. A reboot (not a power-off,
    // which needs ACPI) makes the VMM exit: QEMU runs with `-no-reboot`,
    // Firecracker stops on a guest reboot.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_AUTOBOOT);
    }
    // reboot only returns on failure: exiting PID 1 panics the kernel,
    // which `panic=-1` turns into a reboot, i.e. a QEMU exit.
    std::process::exit(1)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let pid1 = std::process::id() == 1;
    if pid1 {
        init();
        load_modules();
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let options = Options {
        hang_events: pid1 && cmdline_opt(&cmdline, "omega.agent.test").as_deref() == Some("hang"),
    };
    let stop = match args.first().map(String::as_str) {
        Some("--stdio") => agent::run(std::io::stdin(), std::io::stdout(), &options),
        Some("--version") => {
            println!("omega-agent {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Some("--port") | None => {
            let port = match (args.get(1), pid1) {
                (Some(p), _) => p.clone(),
                (None, true) => {
                    cmdline_opt(&cmdline, "omega.agent.port").unwrap_or_else(|| "/dev/ttyS1".into())
                }
                (None, false) => {
                    say("usage: omega-agent --stdio | --port DEVICE (or run as PID 1)");
                    return ExitCode::from(2);
                }
            };
            let vsock = port
                .strip_prefix("vsock:")
                .map(|p| p.parse::<u32>().map_err(|e| format!("{port}: {e}")));
            let file = match vsock {
                Some(Ok(p)) => {
                    say(&format!("waiting for the host on vsock port {p}"));
                    vsock_accept(p).map_err(|e| format!("vsock port {p}: {e}"))
                }
                Some(Err(e)) => Err(e),
                None => OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_NOCTTY)
                    .open(&port)
                    .map_err(|e| format!("cannot open {port}: {e}"))
                    .inspect(|f| {
                        if let Err(e) = raw(f) {
                            say(&format!("{port}: raw mode: {e}"));
                        }
                    }),
            };
            let file = match file {
                Ok(f) => f,
                Err(e) => {
                    say(&e);
                    if pid1 {
                        power_off();
                    }
                    return ExitCode::from(1);
                }
            };
            let reader = match file.try_clone() {
                Ok(r) => r,
                Err(e) => {
                    say(&format!("{port}: {e}"));
                    if pid1 {
                        power_off();
                    }
                    return ExitCode::from(1);
                }
            };
            say(&format!("serving the host on {port}"));
            agent::run(reader, file, &options)
        }
        Some(other) => {
            say(&format!("unknown argument {other:?}"));
            return ExitCode::from(2);
        }
    };
    say(&format!("stopping: {stop}"));
    if pid1 {
        power_off();
    }
    match stop {
        Stop::Shutdown => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    }
}
