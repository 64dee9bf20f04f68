"""Exceptions a user can cause.

Library code raises these with a message that names the bad value and what would be valid; the CLI
turns them into one red line on stderr and a non-zero exit (``UsageError`` -> 2, the rest -> 1).
Anything else escaping to the CLI is a bug and keeps its traceback under ``--debug``.
"""

from __future__ import annotations


class StackGAN2Error(Exception):
    """A problem with the user's input, data or files (exit code 1)."""

    exit_code = 1


class UsageError(StackGAN2Error):
    """Invalid options or configuration values (exit code 2, like a command-line usage error)."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration value is out of range, of the wrong type or unknown."""


class DataError(StackGAN2Error):
    """A dataset is missing, has the wrong layout or holds unreadable files."""


class CheckpointError(StackGAN2Error):
    """A checkpoint or model directory is missing, truncated, tampered with or incompatible."""


class PromptError(StackGAN2Error):
    """A prompt cannot be turned into a sentence embedding (empty, or no known word)."""


class TrainingError(StackGAN2Error):
    """Training cannot continue (for example a non-finite loss)."""


class TrainingInterrupted(StackGAN2Error):
    """SIGINT/SIGTERM arrived; a checkpoint was saved. Exit code 128 + signal (130 / 143)."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum
