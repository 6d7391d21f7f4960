"""`herd keygen PATH`: a CURVE key pair for the TCP links between gateways and workers."""

from __future__ import annotations

import argparse


def cmd_keygen(args: argparse.Namespace) -> int:
    from herd.protocol.curve import keygen  # zmq only for this command

    secret, public = keygen(args.path)
    print(f"secret key: {secret} (keep it on this host)\npublic key: {public}")
    return 0

