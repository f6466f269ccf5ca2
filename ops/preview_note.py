"""Turn a ``pulumi preview --diff`` log into Markdown for the merge request, and post it as a note if allowed.

The Markdown is always written (the preview job exposes it as an artifact in the merge request). When
``PREVIEW_NOTE_TOKEN`` (a project access token with ``api`` scope) is set in a merge request pipeline, the
same text becomes the stack's note on the merge request: one note per stack, found again by a hidden marker
(``<!-- dmd-pipeline preview: <stack> -->``) and edited in place on every later run, never added per run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["MAX_LOG_CHARS", "find_note", "marker", "publish_note", "render", "summary"]

MAX_LOG_CHARS = 60_000  # a readable note; the full log stays in the job
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_NOTES_PER_PAGE = 100
_MAX_PAGES = 50  # 5,000 notes: a merge request with more is not looked through
_CHANGE = re.compile(r"^\s*([+~\-]|\+-|-\+)?\s*(\d+) (to create|to update|to delete|to replace|unchanged)\b", re.M)


def summary(log: str) -> dict[str, int]:
    """Counts from the preview's ``Resources:`` block, e.g. ``{"to create": 2, "unchanged": 30}``."""
    counts: dict[str, int] = {}
    for _, number, kind in _CHANGE.findall(log):
        counts[kind] = counts.get(kind, 0) + int(number)
    return counts


def marker(stack: str) -> str:
    """The hidden first line that identifies the stack's preview note among the merge request's notes."""
    return f"<!-- dmd-pipeline preview: {stack} -->"


def render(stack: str, log: str, status: str, job_url: str = "") -> str:
    """The note: marker, stack, outcome, counts, then the (tail of the) diff in a fenced block."""
    clean = _ANSI.sub("", log).replace("```", "`\u200b``")
    counts = summary(clean)
    outcome = "succeeded" if status == "success" else f"**{status or 'unknown'}**"
    lines = [marker(stack), f"### `pulumi preview --diff` of stack `{stack}`: {outcome}", ""]
    if counts:
        lines.append(", ".join(f"{number} {kind}" for kind, number in counts.items()))
        lines.append("")
    if job_url:
        lines.extend([f"Full log: {job_url}", ""])
    if len(clean) > MAX_LOG_CHARS:
        clean = f"... ({len(clean) - MAX_LOG_CHARS} characters cut, see the job log)\n" + clean[-MAX_LOG_CHARS:]
    lines.extend(["<details><summary>diff</summary>", "", "```diff", clean.rstrip(), "```", "", "</details>", ""])
    return "\n".join(lines)


def _request(url: str, token: str, method: str = "GET", body: str | None = None) -> tuple[int, Any, Any]:
    """One GitLab API call: (HTTP status, parsed JSON, headers)."""
    request = urllib.request.Request(  # noqa: S310 - the URL is GitLab's own API URL from CI_API_V4_URL
        url,
        data=None if body is None else json.dumps({"body": body}).encode("utf-8"),
        headers={"PRIVATE-TOKEN": token, "Content-Type": "application/json"},
        method=method,
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return int(response.status), json.loads(response.read() or b"null"), response.headers


def find_note(notes_url: str, token: str, stack: str) -> int | None:
    """The id of the stack's note (the first note starting with its marker), looking through every page."""
    wanted = marker(stack)
    page: str | None = "1"
    for _ in range(_MAX_PAGES):
        if not page:
            return None
        _, notes, headers = _request(f"{notes_url}?per_page={_NOTES_PER_PAGE}&page={page}&sort=asc", token)
        for note in notes or []:
            if str(note.get("body", "")).startswith(wanted) and not note.get("system", False):
                return int(note["id"])
        page = headers.get("X-Next-Page") or None
    return None


def publish_note(api_url: str, project_id: str, merge_request_iid: str, token: str, *, stack: str, body: str) -> str:
    """Edit the stack's note in place, or create it on the first run; returns what was done."""
    notes_url = f"{api_url}/projects/{project_id}/merge_requests/{merge_request_iid}/notes"
    note_id = find_note(notes_url, token, stack)
    if note_id is None:
        status = _request(notes_url, token, "POST", body)[0]
        return f"created (HTTP {status})"
    status = _request(f"{notes_url}/{note_id}", token, "PUT", body)[0]
    return f"updated note {note_id} (HTTP {status})"


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(prog="python -m ops.preview_note", description=__doc__.splitlines()[0])
    parser.add_argument("stack")
    parser.add_argument("log", type=Path, help="file holding the preview's output")
    parser.add_argument("--status", default="success", help="the job status ($CI_JOB_STATUS)")
    parser.add_argument("--output", type=Path, required=True, help="Markdown file to write")
    args = parser.parse_args(argv)
    log = args.log.read_text(encoding="utf-8", errors="replace") if args.log.exists() else "(no preview output)"
    body = render(args.stack, log, args.status, environ.get("CI_JOB_URL", ""))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(body, encoding="utf-8")
    print(f"preview report: {args.output}")
    token, iid = environ.get("PREVIEW_NOTE_TOKEN", ""), environ.get("CI_MERGE_REQUEST_IID", "")
    if token and iid:
        try:
            done = publish_note(
                environ["CI_API_V4_URL"], environ["CI_PROJECT_ID"], iid, token, stack=args.stack, body=body
            )
        except (OSError, KeyError, ValueError) as error:
            print(f"preview note not posted: {error}", file=sys.stderr)
            return 0  # the report artifact is still there; a note is a convenience
        print(f"preview note on !{iid}: {done}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
