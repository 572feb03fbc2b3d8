//! One line per event on stderr in vminsert's layout:
//! `2024-01-02T03:04:05.678Z\tinfo\tshell/src/storage.rs:42\tmessage`.

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Info = 0,
    Warn = 1,
    Error = 2,
    Fatal = 3,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
            Level::Fatal => "fatal",
        }
    }
}

static MIN_LEVEL: AtomicU8 = AtomicU8::new(0);

/// Apply `-loggerLevel` (INFO, WARN, ERROR, FATAL, PANIC).
pub fn set_level(name: &str) -> Result<(), String> {
    let l = match name {
        "INFO" => Level::Info,
        "WARN" => Level::Warn,
        "ERROR" => Level::Error,
        "FATAL" | "PANIC" => Level::Fatal,
        other => {
            return Err(format!(
            "unsupported -loggerLevel={other:?}; supported values: INFO, WARN, ERROR, FATAL, PANIC"
        ))
        }
    };
    MIN_LEVEL.store(l as u8, Ordering::Relaxed);
    Ok(())
}

pub fn enabled(level: Level) -> bool {
    level as u8 >= MIN_LEVEL.load(Ordering::Relaxed)
}

/// Write one line; `caller` is `file!():line!()` of the call site.
pub fn write(level: Level, caller: &str, msg: std::fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let line = format!(
        "{}\t{}\t{}\t{}\n",
        timestamp(SystemTime::now()),
        level.as_str(),
        caller,
        msg
    );
    // One write per line so lines from different threads never interleave.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// RFC 3339 UTC with milliseconds, as vminsert prints it.
pub fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (y, mo, da) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{da:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Info, concat!(file!(), ":", line!()), format_args!($($arg)*)) };
}
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Warn, concat!(file!(), ":", line!()), format_args!($($arg)*)) };
}
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log::write($crate::log::Level::Error, concat!(file!(), ":", line!()), format_args!($($arg)*)) };
}
/// Log and exit 1, as vminsert's `logger.Fatalf` does.
#[macro_export]
macro_rules! fatal {
    ($($arg:tt)*) => {{ $crate::log::write($crate::log::Level::Fatal, concat!(file!(), ":", line!()), format_args!($($arg)*)); std::process::exit(1) }};
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_utc_rfc3339_with_millis() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(timestamp(t), "2023-11-14T22:13:20.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(&timestamp(leap)[..10], "2000-02-29");
    }

    #[test]
    fn level_names() {
        assert!(set_level("LOUD").is_err());
        set_level("WARN").unwrap();
        assert!(!enabled(Level::Info));
        assert!(enabled(Level::Error));
        set_level("INFO").unwrap();
    }
}
