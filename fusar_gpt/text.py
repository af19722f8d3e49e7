"""One-line messages. Why a module: a quarantine file, the CLI and the server print one line per problem, and
GDAL, pyproj and the JSON decoder put newlines and runs of spaces in their error text."""

from __future__ import annotations


def one_line(text) -> str:
    """``text`` (a string or an exception) with every run of whitespace, newlines included, made one space."""
    return " ".join(str(text).split())
