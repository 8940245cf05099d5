"""pam_toopher.text.sanitize: the one shaping of untrusted text for the
phone, terminals and logs (issue 14, items 8 and 10): nothing invisible,
nothing collapsed silently, and a cut keeps the end in view."""

import pytest

from pam_toopher.text import sanitize


@pytest.mark.parametrize("hidden, shown", [
    ("\u3164", r"\u3164"),        # Hangul filler: a letter that draws nothing
    ("\u115f", r"\u115f"), ("\u1160", r"\u1160"), ("\uffa0", r"\uffa0"),
    ("\u2800", r"\u2800"),        # Braille blank
    ("\u200b", r"\u200b"),        # zero-width space (Cf)
    ("\u2060", r"\u2060"),        # word joiner
    ("\u202e", r"\u202e"),        # right-to-left override
    ("\u2066", r"\u2066"),        # left-to-right isolate
    ("\u00a0", r"\xa0"),          # no-break space (Zs)
    ("\u3000", r"\u3000"),        # ideographic space
    ("\u2028", r"\u2028"),        # line separator
    ("\x1b", r"\x1b"), ("\x7f", r"\x7f"), ("\x85", r"\x85"),
    ("\n", r"\n"), ("\r", r"\r"), ("\t", r"\t"),
    ("\U000e0041", r"\U000e0041"),  # tag character
    ("\ue000", r"\ue000"),        # private use
])
def test_invisible_and_blank_characters_are_shown_escaped(hidden, shown):
    assert sanitize(f"id{hidden}; touch x") == f"id{shown}; touch x"


def test_a_combining_mark_with_nothing_to_sit_on_is_shown():
    assert sanitize("\u0301x") == r"\u0301x"
    assert sanitize("a \u0301") == r"a \u0301"
    assert sanitize("caf\u0065\u0301") == "caf\u0065\u0301"  # on a letter: as written


def test_ordinary_text_is_unchanged():
    text = "sudo: /usr/bin/apt-get install -y 'ca-certificates' from host-1.example.org  ok"
    assert sanitize(text) == text
    assert sanitize("Zoë café 日本語") == "Zoë café 日本語"


def test_a_run_of_spaces_is_shown_with_its_count():
    assert sanitize("id -u" + " " * 160 + "; touch x") == "id -u [160 spaces] ; touch x"
    assert sanitize("a   b") == "a   b"  # up to three: as written
    assert sanitize("a    b") == "a [4 spaces] b"


def test_a_long_text_keeps_its_beginning_and_its_end():
    text = "/bin/sh -c " + "x" * 500 + "; touch /etc/evil"
    shown = sanitize(text, 200)
    assert len(shown) == 200
    assert shown.startswith("/bin/sh -c xxx") and shown.endswith("; touch /etc/evil")
    cut = int(shown.split("...[")[1].split(" chars cut]")[0])
    assert len(shown) - len(f"...[{cut} chars cut]...") + cut == len(text)


def test_a_long_host_name_keeps_its_domain():
    """A 217-character rhost once hid the attacker's domain after 200."""
    rhost = "a" * 190 + ".attacker.example"
    shown = sanitize(f"sshd login from {rhost}", 200)
    assert shown.endswith(".attacker.example") and "chars cut" in shown


@pytest.mark.parametrize("limit", [1, 5, 31, 32, 33, 64, 200, 511])
def test_the_limit_is_kept(limit):
    for length in (limit, limit + 1, limit + 40, 10 * limit + 1000):
        assert len(sanitize("y" * length, limit)) <= limit
    assert sanitize("y" * limit, limit) == "y" * limit


def test_escapes_count_towards_the_limit_and_are_cut_whole():
    shown = sanitize("\u3164" * 100, 64)
    assert len(shown) <= 64 and "\u3164" not in shown
    head, tail = shown.split("...[")[0], shown.split(" chars cut]...")[1]
    assert head == r"\u3164" * (len(head) // 6) and tail == r"\u3164" * (len(tail) // 6)
    assert sanitize("a" + " " * 100 + "b" * 300, 60).startswith("a [100 spaces] b")
