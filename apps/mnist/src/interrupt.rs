//! Ctrl-C: the first press during training stops it after the batch under way, keeping the run
//! as of its last completed epoch (saved as usual), and during a search lets no further trial
//! start; a second press, or one at any other time, ends the program at once with status 130
//! (as a shell reports a process ended by SIGINT).

use std::fmt;
use std::sync::{Mutex, Once};

use nn_train::Interrupt;

/// The interrupt of the work under way, if any, and what its request does (in words).
static CURRENT: Mutex<Option<(Interrupt, &'static str)>> = Mutex::new(None);

/// The exit status of a program ended by Ctrl-C: 128 + SIGINT.
pub const STATUS: u8 = 130;

/// While alive, Ctrl-C requests the interrupt given to [`during`].
pub struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        *CURRENT.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }
}

/// Makes the first Ctrl-C request `interrupt` (until the guard is dropped) instead of ending the
/// program, saying `what` that does ([`install`]s the handler if need be).
pub fn during(interrupt: Interrupt, what: &'static str) -> Guard {
    install();
    *CURRENT.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((interrupt, what));
    Guard
}

/// Installs the handler (once): outside [`during`], Ctrl-C ends the program at once with
/// [`STATUS`], as it would without. Where it cannot be installed, Ctrl-C keeps its default and a
/// note says that it will lose the run.
pub fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        if let Err(e) = ctrlc::set_handler(on_ctrl_c) {
            eprintln!("note: Ctrl-C will end the program at once, losing the run ({e})");
        }
    });
}

/// The handler (on `ctrlc`'s own thread, not in the signal's context: it may lock and print).
fn on_ctrl_c() {
    let current = CURRENT.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    match current {
        Some((i, what)) if !i.is_requested() => {
            i.request();
            eprintln!("\nCtrl-C: {what} (Ctrl-C again to quit at once, saving nothing)");
        }
        _ => std::process::exit(i32::from(STATUS)),
    }
}

/// The error a command ends with after it was interrupted and saved what it could: `main`
/// prints it without "error:" and exits with [`STATUS`].
#[derive(Debug)]
pub struct Interrupted(pub String);

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Interrupted {}
