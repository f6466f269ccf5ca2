"""The small commands the pipeline runs: the CI AWS profile and the merge request preview note."""

from __future__ import annotations

import configparser
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from ops import ci_aws_profile, preview_note

PREVIEW_LOG = """\
Previewing update (qa1):
\x1b[32m+ \x1b[0m aws:lambda:Function demand-processor create
  ~ aws:lambda:Alias live update [diff: ~functionVersion]
Resources:
    + 2 to create
    ~ 1 to update
    27 unchanged
"""


def test_profile_of_the_stack_file_becomes_a_web_identity_profile(tmp_path, monkeypatch):
    config_file = tmp_path / "aws" / "config"
    config_file.parent.mkdir()
    config_file.write_text("[profile other]\nregion = eu-west-1\n")
    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::000000000000:role/prd3292-qa1-ci")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", "/tmp/gitlab-oidc-token")
    monkeypatch.setenv("AWS_ROLE_SESSION_NAME", "gitlab-1-2")

    assert ci_aws_profile.main(["qa1", "--config-file", str(config_file)]) == 0

    parser = configparser.ConfigParser()
    parser.read(config_file)
    assert dict(parser["profile tm-nonprod-Ops-Techops"]) == {
        "role_arn": "arn:aws:iam::000000000000:role/prd3292-qa1-ci",
        "web_identity_token_file": "/tmp/gitlab-oidc-token",
        "role_session_name": "gitlab-1-2",
        "region": "us-east-1",
    }
    assert parser["profile other"]["region"] == "eu-west-1"


def test_prod_stack_gets_the_prod_profile_and_a_rewrite_replaces_it(tmp_path, monkeypatch):
    config_file = tmp_path / "config"
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", "/tmp/t")
    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::111111111111:role/old")
    ci_aws_profile.main(["prod1", "--config-file", str(config_file)])
    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::111111111111:role/new")

    ci_aws_profile.main(["prod1", "--config-file", str(config_file)])

    parser = configparser.ConfigParser()
    parser.read(config_file)
    assert parser.sections() == ["profile tm-prod-Ops-Techops"]
    assert parser["profile tm-prod-Ops-Techops"]["role_arn"].endswith("role/new")


def test_missing_role_is_refused_with_the_variable_to_set(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AWS_ROLE_ARN", "")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", "/tmp/t")

    assert ci_aws_profile.main(["dev1", "--config-file", str(tmp_path / "config")]) == 2
    assert "DEPLOY_ROLE_ARN_<ACCOUNT>" in capsys.readouterr().err
    assert not (tmp_path / "config").exists()


def test_preview_summary_counts_the_resources_block():
    assert preview_note.summary(PREVIEW_LOG) == {"to create": 2, "to update": 1, "unchanged": 27}


def test_preview_report_is_markdown_without_terminal_colours(tmp_path):
    log = tmp_path / "preview-qa1.txt"
    log.write_text(PREVIEW_LOG)
    output = tmp_path / "reports" / "preview-qa1.md"

    assert preview_note.main(["qa1", str(log), "--status", "failed", "--output", str(output)], environ={}) == 0

    text = output.read_text()
    assert text.startswith("<!-- dmd-pipeline preview: qa1 -->\n### `pulumi preview --diff` of stack `qa1`: **failed**")
    assert "2 to create, 1 to update, 27 unchanged" in text
    assert "\x1b[" not in text
    assert "```diff\nPreviewing update (qa1):" in text


def test_long_preview_keeps_the_tail():
    text = preview_note.render(
        "prod1", "x" * (preview_note.MAX_LOG_CHARS + 10) + "\nResources:\n    3 unchanged\n", "success"
    )

    assert "characters cut" in text
    assert "3 unchanged" in text
    assert len(text) < preview_note.MAX_LOG_CHARS + 1000


@pytest.fixture
def gitlab_api():
    """A GitLab notes API on 127.0.0.1: list (paginated, X-Next-Page), create and edit, keeping every request."""
    received: list[dict] = []
    notes: list[dict] = []
    prefix = "/api/v4/projects/42/merge_requests/7/notes"

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, status: int, payload, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(json.dumps(payload).encode())

        def _body(self) -> dict:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received.append({"method": self.command, "path": self.path, "token": self.headers["PRIVATE-TOKEN"]})
            received[-1]["body"] = body
            return body

        def do_GET(self):
            received.append({"method": "GET", "path": self.path, "token": self.headers["PRIVATE-TOKEN"]})
            query = dict(part.split("=") for part in self.path.split("?", 1)[1].split("&"))
            page, per_page = int(query["page"]), min(int(query["per_page"]), 2)  # small pages: pagination is used
            chunk = notes[(page - 1) * per_page : page * per_page]
            more = len(notes) > page * per_page
            self._reply(200, chunk, {"X-Next-Page": str(page + 1) if more else ""})

        def do_POST(self):
            body = self._body()
            note = {"id": 100 + len(notes), "body": body["body"], "system": False}
            notes.append(note)
            self._reply(201, note)

        def do_PUT(self):
            body = self._body()
            note_id = int(self.path.rsplit("/", 1)[1])
            (note,) = [note for note in notes if note["id"] == note_id]
            note["body"] = body["body"]
            self._reply(200, note)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/api/v4", received, notes, prefix
    server.shutdown()
    server.server_close()


def _environ(api_url: str) -> dict[str, str]:
    return {
        "PREVIEW_NOTE_TOKEN": "glpat-test",
        "CI_MERGE_REQUEST_IID": "7",
        "CI_API_V4_URL": api_url,
        "CI_PROJECT_ID": "42",
    }


def test_note_is_posted_on_the_merge_request_when_a_token_is_set(tmp_path, gitlab_api):
    api_url, received, notes, prefix = gitlab_api
    log = tmp_path / "preview.txt"
    log.write_text(PREVIEW_LOG)

    assert preview_note.main(["qa1", str(log), "--output", str(tmp_path / "p.md")], environ=_environ(api_url)) == 0

    assert [(request["method"], request["path"].split("?")[0]) for request in received] == [
        ("GET", prefix),
        ("POST", prefix),
    ]
    assert received[1]["token"] == "glpat-test"
    assert received[1]["body"]["body"] == (tmp_path / "p.md").read_text()
    assert notes[0]["body"].startswith("<!-- dmd-pipeline preview: qa1 -->\n### `pulumi preview --diff` of stack `qa1`")


def test_later_runs_edit_the_stacks_note_in_place(tmp_path, gitlab_api, capsys):
    api_url, received, notes, prefix = gitlab_api
    # Someone else's notes first (more than a page), one quoting the heading but without the marker.
    notes.extend(
        [
            {"id": 1, "body": "LGTM", "system": False},
            {"id": 2, "body": "### `pulumi preview --diff` of stack `qa1`: is this right?", "system": False},
            {"id": 3, "body": "added 1 commit", "system": True},
        ]
    )
    log = tmp_path / "preview.txt"
    output = tmp_path / "p.md"
    for status in ("failed", "success", "success"):
        log.write_text(PREVIEW_LOG + f"\nrun {status}\n")
        arguments = ["qa1", str(log), "--status", status, "--output", str(output)]
        assert preview_note.main(arguments, environ=_environ(api_url)) == 0
    preview_note.main(["prod1", str(log), "--output", str(output)], environ=_environ(api_url))

    ours = [note for note in notes if note["body"].startswith("<!-- dmd-pipeline preview: ")]
    assert [note["id"] for note in ours] == [103, 104], "one note per stack, however many runs"
    assert "succeeded" in ours[0]["body"]
    assert "**failed**" not in ours[0]["body"]
    writes = [(request["method"], request["path"]) for request in received if request["method"] != "GET"]
    assert writes == [("POST", prefix), ("PUT", f"{prefix}/103"), ("PUT", f"{prefix}/103"), ("POST", prefix)]
    assert notes[1]["body"] == "### `pulumi preview --diff` of stack `qa1`: is this right?", "others' notes untouched"
    assert "preview note on !7: updated note 103 (HTTP 200)" in capsys.readouterr().out


def test_an_unreachable_gitlab_does_not_fail_the_preview(tmp_path, capsys):
    environ = _environ("http://127.0.0.1:9/api/v4")  # discard port: nothing listens

    assert preview_note.main(["qa1", str(tmp_path / "none.txt"), "--output", str(tmp_path / "p.md")], environ) == 0
    assert "preview note not posted:" in capsys.readouterr().err
    assert (tmp_path / "p.md").exists()


def test_no_token_means_no_note(tmp_path, gitlab_api):
    _, received, _, _ = gitlab_api
    environ = {"CI_MERGE_REQUEST_IID": "7", "CI_PROJECT_ID": "42"}

    assert (
        preview_note.main(["qa1", str(tmp_path / "missing.txt"), "--output", str(tmp_path / "p.md")], environ=environ)
        == 0
    )

    assert received == []
    assert "(no preview output)" in (tmp_path / "p.md").read_text()
