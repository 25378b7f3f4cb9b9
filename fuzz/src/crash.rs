//! Fatal signals (stack overflow, abort, SIGSEGV/SIGBUS/SIGILL/SIGFPE) cannot be caught like
//! panics: the process dies. Before it does, this handler writes the input that was executing to
//! the thread's dump file and says so on stderr, then hands over to the previous handler (Rust's
//! own stack-overflow reporter) or the default action, so the run still aborts loudly.
//!
//! The current input is published in thread-locals (const-initialised `Cell`s: no lazy
//! initialisation or destructor, so reading them in a signal handler is sound) and written with
//! `open`/`write`/`close` only, which are async-signal-safe.

use std::cell::{Cell, UnsafeCell};
use std::ffi::CString;
use std::path::Path;
use std::sync::Once;

thread_local! {
    static CURRENT: Cell<(*const u8, usize)> = const { Cell::new((std::ptr::null(), 0)) };
    static DUMP: Cell<*const libc::c_char> = const { Cell::new(std::ptr::null()) };
}

const SIGNALS: [libc::c_int; 5] = [libc::SIGSEGV, libc::SIGBUS, libc::SIGABRT, libc::SIGILL, libc::SIGFPE];

struct Previous(UnsafeCell<[libc::sigaction; 5]>);
// SAFETY: written once under `INSTALL` before any handler can run, read-only afterwards.
unsafe impl Sync for Previous {}

static PREVIOUS: Previous = Previous(UnsafeCell::new(unsafe { std::mem::zeroed() }));
static INSTALL: Once = Once::new();

fn write_all(fd: libc::c_int, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: a valid buffer of `bytes.len()` bytes.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n <= 0 {
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

extern "C" fn on_fatal(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let (ptr, len) = CURRENT.try_with(Cell::get).unwrap_or((std::ptr::null(), 0));
    let path = DUMP.try_with(Cell::get).unwrap_or(std::ptr::null());
    if !ptr.is_null() && !path.is_null() {
        // SAFETY: `ptr`/`len` describe the input being executed on this thread (it outlives the
        // execution); `path` is a leaked NUL-terminated string.
        unsafe {
            let fd = libc::open(path, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC, 0o644);
            if fd >= 0 {
                write_all(fd, std::slice::from_raw_parts(ptr, len));
                libc::close(fd);
            }
            write_all(2, b"\nsyncgate-fuzz: fatal signal while executing an input; it was written to ");
            write_all(2, std::slice::from_raw_parts(path.cast::<u8>(), libc::strlen(path)));
            write_all(2, b"\n");
        }
    }
    let Some(i) = SIGNALS.iter().position(|&s| s == sig) else { return };
    // SAFETY: see `Previous`.
    let prev = unsafe { (*PREVIOUS.0.get())[i] };
    let handler = prev.sa_sigaction;
    // SAFETY: restoring the default action / calling the handler that was installed before us
    // with the arguments the kernel gave us.
    unsafe {
        if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
            let mut dfl: libc::sigaction = std::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &dfl, std::ptr::null_mut());
            if sig != libc::SIGSEGV && sig != libc::SIGBUS {
                libc::raise(sig);
            }
            // SIGSEGV/SIGBUS: returning re-executes the faulting instruction under SIG_DFL.
        } else if prev.sa_flags & libc::SA_SIGINFO != 0 {
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) = std::mem::transmute(handler);
            f(sig, info, ctx);
        } else {
            let f: extern "C" fn(libc::c_int) = std::mem::transmute(handler);
            f(sig);
        }
    }
}

/// Installs the handler (once per process), chaining to whatever was installed before.
pub fn install() {
    INSTALL.call_once(|| {
        for (i, &sig) in SIGNALS.iter().enumerate() {
            // SAFETY: plain sigaction calls; `PREVIOUS` is not read until a handler runs, which
            // can only happen after it is written here.
            unsafe {
                let mut act: libc::sigaction = std::mem::zeroed();
                act.sa_sigaction = on_fatal as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void)
                    as libc::sighandler_t;
                act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut act.sa_mask);
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, &act, &mut old) == 0 {
                    (*PREVIOUS.0.get())[i] = old;
                }
            }
        }
    });
}

/// Where this thread's input goes if the process dies while executing it.
pub fn set_dump_path(path: &Path) {
    if let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) {
        DUMP.with(|d| d.set(c.into_raw()));
    }
}

/// Publishes `input` as the one executing on this thread until the guard drops.
pub fn executing(input: &[u8]) -> Executing {
    CURRENT.with(|c| c.set((input.as_ptr(), input.len())));
    Executing
}

pub struct Executing;

impl Drop for Executing {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set((std::ptr::null(), 0)));
    }
}
