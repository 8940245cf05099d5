"""pam_toopher.paths: a file is trusted only if no one but root can change
it or any directory above it (issue 14, item 9), like sshd's StrictModes."""

import os

import pytest

from pam_toopher.config import ConfigError, check_ca_bundle, load_config
from pam_toopher.paths import UntrustedPathError, open_parent, open_trusted

pytestmark = pytest.mark.usefixtures("root_only")  # files of another user

OTHER_UID = 12345
CONFIG = "[toopher]\napi_url = https://api.example.com/v1/\nconsumer_key = k\nconsumer_secret = s\n"


def private_file(path, text="x", mode=0o600):
    path.write_text(text)
    path.chmod(mode)
    return path


def directory(path, mode=0o755, uid=0):
    path.mkdir()
    path.chmod(mode)
    os.chown(path, uid, 0)
    return path


def opened(path):
    fd, info = open_trusted(str(path), os.O_RDONLY)
    os.close(fd)
    return info


def test_a_file_in_root_owned_closed_directories_is_trusted(tmp_path):
    conf = private_file(directory(tmp_path / "etc") / "toopher.conf")
    assert opened(conf).st_uid == 0


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757, 0o722])
def test_a_directory_writable_by_group_or_others_is_refused(tmp_path, mode):
    etc = directory(tmp_path / "etc", mode)
    conf = private_file(etc / "toopher.conf")
    with pytest.raises(UntrustedPathError, match=f"directory {etc} is writable by group or "
                                                 f"others \\(mode 0{mode:o}\\)"):
        opened(conf)


def test_a_writable_directory_higher_up_is_refused(tmp_path):
    top = directory(tmp_path / "top", 0o777)
    conf = private_file(directory(top / "security") / "toopher.conf")
    with pytest.raises(UntrustedPathError, match=f"directory {top} is writable"):
        opened(conf)


def test_a_directory_owned_by_another_user_is_refused(tmp_path):
    etc = directory(tmp_path / "etc", 0o755, uid=OTHER_UID)
    conf = private_file(etc / "toopher.conf")
    with pytest.raises(UntrustedPathError, match=f"directory {etc} is owned by uid {OTHER_UID}"):
        opened(conf)


def test_a_sticky_world_writable_directory_is_fine_for_an_entry_of_root(tmp_path):
    # /tmp/pytest-of-root/... : others cannot rename or remove root's entries there.
    sticky = directory(tmp_path / "tmp", 0o1777)
    assert opened(private_file(directory(sticky / "mine", 0o700) / "toopher.conf")).st_uid == 0


def test_a_sticky_directory_does_not_protect_an_entry_of_another_user(tmp_path):
    sticky = directory(tmp_path / "tmp", 0o1777)
    theirs = private_file(sticky / "toopher.conf")
    os.chown(theirs, OTHER_UID, OTHER_UID)
    with pytest.raises(UntrustedPathError, match="sticky, but the entry is not owned by root"):
        opened(theirs)
    with pytest.raises(UntrustedPathError, match=f"directory {sticky / 'dir'} is owned by uid"):
        opened(private_file(directory(sticky / "dir", 0o755, uid=OTHER_UID) / "toopher.conf"))


def test_symlinks_are_followed_and_their_targets_checked(tmp_path):
    trusted = directory(tmp_path / "trusted")
    conf = private_file(trusted / "real.conf")
    (trusted / "absolute").symlink_to(conf)
    (trusted / "relative").symlink_to("../trusted/real.conf")
    assert opened(trusted / "absolute").st_ino == opened(trusted / "relative").st_ino
    unsafe = directory(tmp_path / "unsafe", 0o777)
    private_file(unsafe / "real.conf")
    (trusted / "into-unsafe").symlink_to(unsafe / "real.conf")
    with pytest.raises(UntrustedPathError, match=f"directory {unsafe} is writable"):
        opened(trusted / "into-unsafe")


def test_a_symlink_loop_is_refused(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(UntrustedPathError, match="too many symbolic links"):
        opened(tmp_path / "a")


def test_a_missing_last_component_can_be_created_by_the_caller(tmp_path):
    parent, name = open_parent(str(tmp_path / "new.log"))
    try:
        assert name == "new.log" and parent.path == str(tmp_path)
    finally:
        parent.close()
    with pytest.raises(FileNotFoundError, match="no such directory"):
        open_parent(str(tmp_path / "absent" / "new.log"))


# ------------------------------------------------------- through the config

def test_load_refuses_a_config_in_a_directory_others_can_write(tmp_path):
    etc = directory(tmp_path / "security", 0o777)
    conf = private_file(etc / "toopher.conf", CONFIG)
    with pytest.raises(ConfigError, match=f"{conf}: refused: directory {etc} is writable by "
                                          "group or others"):
        load_config(str(conf))


def test_load_checks_the_ca_bundle(tmp_path):
    ca = private_file(tmp_path / "ca.pem", "-----BEGIN CERTIFICATE-----\n", 0o644)
    conf = private_file(tmp_path / "toopher.conf", CONFIG + f"ca_bundle = {ca}\n")
    assert load_config(str(conf)).ca_bundle == str(ca)
    ca.chmod(0o666)
    with pytest.raises(ConfigError, match=f"ca_bundle {ca}: must not be writable by group or "
                                          "others \\(mode is 0666\\)"):
        load_config(str(conf))
    ca.chmod(0o644)
    os.chown(ca, OTHER_UID, OTHER_UID)
    with pytest.raises(ConfigError, match=f"ca_bundle {ca}: must be owned by root"):
        load_config(str(conf))


def test_a_ca_bundle_in_a_writable_directory_is_refused(tmp_path):
    drop = directory(tmp_path / "drop", 0o777)
    ca = private_file(drop / "ca.pem", "x", 0o644)
    with pytest.raises(ConfigError, match=f"ca_bundle {ca}: refused: directory {drop} is "
                                          "writable"):
        check_ca_bundle(str(ca))


def test_the_system_ca_bundle_passes():
    check_ca_bundle("/etc/ssl/certs/ca-certificates.crt")
