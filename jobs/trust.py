"""Checkpoints are trusted input: resume only from folders this user wrote (or with --trust-checkpoint).

`torch.distributed.checkpoint` keeps its `.metadata` as a pickle, and loading a pickle can run code.
A run folder is therefore trusted input: a re-run resumes from the checkpoints in it only when the
folder and every file in it belong to the current user (`os.stat` uid), unless the user says they
trust it (`--trust-checkpoint`).

Example:
    >>> import tempfile
    >>> check_owned(Path(tempfile.mkdtemp()), trust=False)    # this user's folder: nothing raised
"""

from __future__ import annotations

import os
from pathlib import Path

from features.errors import UserError


class UntrustedCheckpointError(UserError):
    """A checkpoint folder holds files another user wrote."""

    def __init__(self, folder: Path, path: Path, uid: int) -> None:
        self.folder, self.path, self.uid = Path(folder), Path(path), uid
        super().__init__(f"{folder}: cannot resume from it, {path} belongs to another user (uid {uid}) and checkpoints "
                         "are loaded with pickle, which can run code; delete the folder to train from scratch, or "
                         "pass --trust-checkpoint if you trust whoever wrote it.")

    def __reduce__(self):
        return (type(self), (self.folder, self.path, self.uid))


def check_owned(folder: Path, trust: bool = False) -> None:
    """Raise `UntrustedCheckpointError` when `folder` (or anything in it) is not the current user's."""
    folder = Path(folder)
    if trust or not folder.exists():
        return
    me = os.getuid()
    for path in [folder, *sorted(folder.rglob("*"))]:
        uid = path.lstat().st_uid
        if uid != me:
            raise UntrustedCheckpointError(folder, path, uid)
