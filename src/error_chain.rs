//! An error and its causes as one line. Library errors name their file and
//! the CLI adds what it was doing, so the raw chain says things twice
//! ("reading config a.ron: a.ron: No such file: No such file").

/// `error` and its causes joined by ": ", each cause without what the line
/// already says: a cause already contained in it is left out, and a cause
/// that starts by naming something the line already named starts after it.
pub fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        let text = match text.split_once(": ") {
            Some((subject, rest)) if names_a_file(subject) && line.contains(subject) => rest.to_string(),
            _ => text,
        };
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// `a.ron`, `runs/x/config.ron`: a path as library errors start with it.
fn names_a_file(subject: &str) -> bool {
    subject.len() > 2 && !subject.contains(' ') && (subject.contains('/') || subject.contains('.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn repeated_paths_and_causes_are_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let err = anyhow::Error::new(difi_core::error::Error::io("a.ron", io)).context("reading config a.ron");
        assert_eq!(one_line(&err), "reading config a.ron: No such file or directory");
    }

    #[test]
    fn distinct_causes_are_all_kept() {
        let err = Err::<(), _>(anyhow::anyhow!("config `seed`: must be a number"))
            .context("checking config b.ron")
            .unwrap_err();
        assert_eq!(one_line(&err), "checking config b.ron: config `seed`: must be a number");
    }
}
