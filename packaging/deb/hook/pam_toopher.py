# pam_toopher: the file pam_python runs, found by its short name
#
#   auth required pam_python.so pam_toopher.py [config=PATH] [audit_log=PATH] [debug]
#
# pam_python executes this file for every PAM handle; the hooks live in the
# installed package (/usr/lib/python3/dist-packages/pam_toopher).
from pam_toopher.pam_hook import *  # noqa: F401,F403
