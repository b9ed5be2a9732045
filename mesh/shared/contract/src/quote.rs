//! Quoting for the POSIX shell: the commands nsh prints for a person to paste, and the hook
//! commands Claude Code runs through `sh -c`.

use std::borrow::Cow;

/// `word` quoted so that the shell reads it back unchanged (only when it needs quoting).
/// A word with a NUL byte cannot be passed through a shell at all; it is returned as is.
pub fn word(word: &str) -> Cow<'_, str> {
    shlex::try_quote(word).unwrap_or(Cow::Borrowed(word))
}

/// `words` quoted and joined by spaces: one shell command line.
pub fn join<'a>(words: impl IntoIterator<Item = &'a str>) -> String {
    words.into_iter().map(word).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_words_that_need_it_are_quoted_and_the_shell_reads_them_back() {
        assert_eq!(word("plain-word_1.0"), "plain-word_1.0");
        let line = join(["nsh", "mesh hook", "it's", "$HOME"]);
        assert_eq!(line, r#"nsh 'mesh hook' "it's" '$HOME'"#);
        assert_eq!(
            shlex::split(&line).unwrap(),
            ["nsh", "mesh hook", "it's", "$HOME"]
        );
    }
}
