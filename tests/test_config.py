"""The configuration file: permissions, syntax, every option's validation."""

import os
import socket

import pytest

from pam_toopher.config import (DEFAULT_PATH, OPTION_PARSERS, Config, ConfigError, Secret,
                                load_config, parse_config)
from tests.conftest import REPO_ROOT

SECRET = "s3cr3t-value-Zq9"
MINIMAL = f"""
[toopher]
api_url = https://api.example.com/v1/
consumer_key = key123
consumer_secret = {SECRET}
"""


def parse(extra: str = "", base: str = MINIMAL) -> Config:
    return parse_config(base + extra, "/etc/test.conf")


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "/etc/test.conf")
    return str(caught.value)


def write(tmp_path, text: str, mode: int = 0o600) -> str:
    path = tmp_path / "toopher.conf"
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def test_defaults():
    config = parse()
    assert config.api_urls == ("https://api.example.com/v1/",)
    assert config.consumer_key == "key123"
    assert config.consumer_secret.reveal() == SECRET
    assert (config.http_timeout, config.auth_timeout) == (10.0, 60.0)
    assert config.failmode == "secure"
    assert config.users == ("*",) and config.groups == ("*",)
    assert config.unpaired == "deny"
    assert config.terminal_id == config.terminal_name == socket.gethostname()
    assert config.action is None
    assert config.automation_allowed is False and config.otp_fallback is True
    assert config.audit_log is None and config.debug is False
    assert DEFAULT_PATH == "/etc/security/toopher.conf"


def test_every_option_parsed_and_stripped(tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("x")
    config = parse(f"""
ca_bundle =   {bundle}
http_timeout = 5
auth_timeout = 30.5
failmode = SAFE
users = * !backup
groups = admins !nopush
unpaired = pair
terminal_id = web-01
terminal_name = Web server 1
action = {{service}} on {{host}} from {{rhost}}
automation_allowed = yes
otp_fallback = off
audit_log = /var/log/toopher-audit.log
debug = true
""")
    assert config.ca_bundle == str(bundle)
    assert (config.http_timeout, config.auth_timeout) == (5.0, 30.5)
    assert config.failmode == "safe"
    assert config.users == ("*", "!backup") and config.groups == ("admins", "!nopush")
    assert config.unpaired == "pair"
    assert (config.terminal_id, config.terminal_name) == ("web-01", "Web server 1")
    assert config.action == "{service} on {host} from {rhost}"
    assert config.automation_allowed is True and config.otp_fallback is False
    assert config.audit_log == "/var/log/toopher-audit.log" and config.debug is True


def test_the_wait_plus_one_http_call_must_end_before_login_grace_time():
    assert parse("auth_timeout = 100\nhttp_timeout = 19\n").auth_timeout == 100
    message = error_of(MINIMAL + "auth_timeout = 100\nhttp_timeout = 20\n")
    assert message == ("/etc/test.conf, line 6: key 'auth_timeout' plus http_timeout must "
                       "stay below 120 seconds (sshd's LoginGraceTime)")


def test_the_prompt_for_the_code_must_come_before_the_wait_ends():
    assert parse().otp_prompt_after == 15
    assert parse("otp_prompt_after = 0\n").otp_prompt_after == 0
    assert parse("auth_timeout = 10\notp_prompt_after = 9.5\n").otp_prompt_after == 9.5
    message = error_of(MINIMAL + "auth_timeout = 10\n")
    assert message == ("/etc/test.conf, line 6: key 'otp_prompt_after' (15 s) must be below "
                       "auth_timeout (10 s), or the prompt for the code never comes (0 asks "
                       "for it at once)")
    # Without the code there is no prompt to come.
    assert parse("auth_timeout = 10\notp_fallback = no\n").auth_timeout == 10


def test_comments_and_blank_lines_are_ignored():
    assert parse("# a comment\n; another\n\n").consumer_key == "key123"


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:800/v1/", "http://127.0.0.1/v1", "http://[::1]:9/v1",
    "https://api.toopher.com/v1/", "https://localhost:8443/v1", "https://127.0.0.1:5000/v1"])
def test_accepted_urls(url):
    assert parse(base=MINIMAL.replace("https://api.example.com/v1/", url)).api_urls == (url,)


@pytest.mark.parametrize("url, words", [
    ("http://api.example.com/v1/", "not to the name api.example.com"),
    ("ftp://api.example.com/", "must be an https:// URL"),
    ("https://user:pw@api.example.com/", "must not contain credentials"),
    ("api.example.com", "must be an https:// URL"),
    ("https://api.example.com:99999/", "invalid port"),
    # Issue 14: a local user's server answers on whichever of 127.0.0.1 / ::1
    # the real one does not hold, or on a freed unprivileged port.
    ("http://localhost:800/v1", "not to the name localhost"),
    ("http://localhost/v1", "not to the name localhost"),
    ("http://127.0.0.1:8000/v1/", "port 8000 can be served by any local user"),
    ("http://[::1]:1024/v1", "port 1024 can be served by any local user"),
    ("http://[::ffff:127.0.0.1]:80/v1", "only to 127.0.0.1 or [::1]"),
    ("http://10.0.0.1:80/v1", "only to 127.0.0.1 or [::1]"),
])
def test_refused_urls(url, words):
    message = error_of(MINIMAL.replace("https://api.example.com/v1/", url))
    assert "line 3" in message and "api_url" in message and words in message
    if url.startswith("http:"):
        assert "must use https://" in message and "make-cert" in message


def test_several_urls_are_kept_in_order_of_preference():
    urls = "https://a.example.com/v1   https://127.0.0.1:8443/v1 http://[::1]:800/v1"
    assert parse(base=MINIMAL.replace("https://api.example.com/v1/", urls)).api_urls == (
        "https://a.example.com/v1", "https://127.0.0.1:8443/v1", "http://[::1]:800/v1")


@pytest.mark.parametrize("urls, words", [
    # The rule holds for each URL: one impersonable instance is one way in.
    ("https://a.example.com/v1 http://127.0.0.1:8000/v1",
     "URL 2 must use https:// (with ca_bundle for a private CA, see toopher-server make-cert): "
     "plain http to port 8000 can be served by any local user"),
    ("http://localhost:800/v1 https://a.example.com/v1", "URL 1 must use https://"),
    ("https://a.example.com/v1 https://b.example.com/v1 ftp://c/", "URL 3 must be an https://"),
    ("https://a.example.com/v1 https://a.example.com/v1/", "URL 2 repeats an earlier one"),
])
def test_each_of_several_urls_is_checked(urls, words):
    message = error_of(MINIMAL.replace("https://api.example.com/v1/", urls))
    assert message.startswith("/etc/test.conf, line 3: key 'api_url' ") and words in message


def test_the_privileged_port_limit_is_read_from_the_kernel(tmp_path, monkeypatch):
    from pam_toopher import config as config_module

    sysctl = tmp_path / "ip_unprivileged_port_start"
    sysctl.write_text("500\n")
    monkeypatch.setattr(config_module, "UNPRIVILEGED_PORT_START", str(sysctl))
    url = "http://127.0.0.1:800/v1"
    assert "port 800 can be served" in error_of(MINIMAL.replace("https://api.example.com/v1/",
                                                                url))
    sysctl.write_text("0\n")  # every port unprivileged: no plain http at all
    assert "port 80 can be served" in error_of(MINIMAL.replace("https://api.example.com/v1/",
                                                               "http://127.0.0.1/v1"))
    assert config_module.unprivileged_port_start(str(tmp_path / "absent")) == 1024


@pytest.mark.parametrize("line, words", [
    ("auth_timeout = 110", "LoginGraceTime"),
    ("auth_timeout = 0", "at least 1"),
    ("auth_timeout = soon", "number of seconds"),
    ("auth_timeout = nan", "at least 1"),
    ("http_timeout = 600", "below 60"),
    ("failmode = open", "one of secure, safe"),
    ("unpaired = maybe", "one of deny, pair, allow"),
    ("otp_fallback = perhaps", "yes or no"),
    ("otp_prompt_after = -1", "at least 0"),
    ("otp_prompt_after = later", "number of seconds"),
    ("groups = ", "at least one pattern"),
    ("users = alice !", "lone !"),
    ("ca_bundle = /nonexistent/ca.pem", "does not exist"),
    ("ca_bundle = relative.pem", "absolute path"),
    ("audit_log = audit.log", "absolute path"),
    ("action = {user.__class__}", "may use only"),
    ("action = {0}", "may use only"),
    ("action = {service!r}", "may use only"),
    ("action = {service", "unbalanced"),
    ("terminal_id =", "must not be empty"),
])
def test_bad_values_name_file_line_and_key(line, words):
    message = error_of(MINIMAL + line + "\n")
    key = line.split("=")[0].strip()
    assert message.startswith("/etc/test.conf, line 6: ")
    assert f"key '{key}'" in message and words in message


@pytest.mark.parametrize("text, words", [
    (MINIMAL + "colour = blue\n", "line 6: unknown key 'colour'"),
    (MINIMAL + "just words\n", "line 6: expected 'key = value'"),
    (MINIMAL + "[other]\n", "line 6: unknown section [other]"),
    (MINIMAL + "[toopher\n", "line 6: a section header must end with ]"),
    ("api_url = https://x/\n" + MINIMAL, "line 1: key 'api_url' comes before"),
    (MINIMAL + "consumer_key = again\n", "line 6: key 'consumer_key' is already set on line 4"),
    ("[toopher]\napi_url = https://x/\n", "missing required key(s): consumer_key, "
                                          "consumer_secret"),
    (MINIMAL + "colour\x1b[31m = x\n", r"unknown key 'colour\x1b[31m'"),
])
def test_syntax_errors_name_file_and_line(text, words):
    message = error_of(text)
    assert message.startswith("/etc/test.conf")
    assert words in message


def test_the_secret_never_appears_in_repr_str_or_errors():
    config = parse()
    assert SECRET not in repr(config) and SECRET not in str(config)
    assert repr(Secret(SECRET)) == str(Secret(SECRET)) == "***"
    assert f"{Secret(SECRET)}" == "***"
    # A bad value on the secret's line must not echo it either.
    bad = MINIMAL.replace(f"consumer_secret = {SECRET}", f"consumer_secret = {SECRET}\n"
                          f"http_timeout = {SECRET}")
    assert SECRET not in error_of(bad)


def test_percent_signs_in_a_secret_are_kept():
    config = parse(base=MINIMAL.replace(SECRET, "a%b%%c"))
    assert config.consumer_secret.reveal() == "a%b%%c"


def test_load_reads_a_private_file(tmp_path):
    config = load_config(write(tmp_path, MINIMAL), require_root_owner=False)
    assert config.consumer_key == "key123"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o620, 0o602])
def test_load_refuses_a_file_open_to_group_or_others(tmp_path, mode):
    path = write(tmp_path, MINIMAL, mode)
    with pytest.raises(ConfigError, match=f"{path}: must not be readable or writable by "
                                          f"group or others \\(mode is 0{mode:o}\\)"):
        load_config(path, require_root_owner=False)


def test_load_refuses_a_file_not_owned_by_root(tmp_path):
    path = write(tmp_path, MINIMAL)
    if os.geteuid() == 0:
        os.chown(path, 12345, 12345)
    with pytest.raises(ConfigError, match="must be owned by root"):
        load_config(path)


def test_load_refuses_a_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(str(tmp_path / "nope.conf"))


def test_load_follows_a_symlink_only_where_no_one_else_can_change_it(tmp_path):
    target = write(tmp_path, MINIMAL)
    link = tmp_path / "link.conf"
    link.symlink_to(target)  # in a directory only root (the test's owner) can change
    assert load_config(str(link), require_root_owner=False).consumer_key == "key123"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: makes files of another user")
def test_load_refuses_a_symlink_another_user_planted_in_a_sticky_directory(tmp_path):
    target = write(tmp_path, MINIMAL)
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    link = sticky / "toopher.conf"
    link.symlink_to(target)
    os.lchown(link, 12345, 12345)
    with pytest.raises(ConfigError, match=f"directory {sticky} is writable by group or others "
                                          r"\(mode 1777\), sticky, but the entry is not owned"):
        load_config(str(link))


def test_load_refuses_a_directory(tmp_path):
    directory = tmp_path / "dir.conf"
    directory.mkdir(mode=0o700)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config(str(directory), require_root_owner=False)


def test_load_reports_invalid_utf8_with_its_line(tmp_path):
    path = tmp_path / "toopher.conf"
    path.write_bytes(MINIMAL.encode() + b"action = \xff\n")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="line 6: not valid UTF-8"):
        load_config(str(path), require_root_owner=False)


EXAMPLE = REPO_ROOT / "config" / "toopher.conf.example"


def test_the_example_file_parses_to_the_defaults():
    config = parse_config(EXAMPLE.read_text(), str(EXAMPLE))
    assert config == Config(path=str(EXAMPLE), api_urls=("https://api.toopher.com/v1/",),
                            consumer_key="YOUR-CONSUMER-KEY",
                            consumer_secret=Secret("YOUR-CONSUMER-SECRET"))


def test_the_example_documents_every_key_and_each_commented_value_is_valid():
    text = EXAMPLE.read_text()
    for key in OPTION_PARSERS:
        assert f"\n#{key} = " in text or f"\n{key} = " in text, key
    commented = [line[1:] for line in text.splitlines()
                 if line.startswith("#") and " = " in line and not line.startswith("# ")
                 and not line.startswith("#ca_bundle")]  # names a file that may not exist
    base = "[toopher]\napi_url = https://x/\nconsumer_key = k\nconsumer_secret = s\n"
    for line in commented:
        if line.split("=")[0].strip() not in ("api_url", "consumer_key", "consumer_secret"):
            parse_config(base + line + "\n", "example")
