"""A fake Label Studio that follows the documented endpoints (tests only)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

TOKEN = "secret-token"


class FakeLabelStudio:
    """One project (id 7): tasks list (paged), bulk import, JSON export; Token auth."""

    def __init__(self) -> None:
        self.tasks: list[dict[str, Any]] = []
        self.import_calls = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def reply(self, code: int, body: Any) -> None:
                raw = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def authorized(self) -> bool:
                if self.headers.get("Authorization") != f"Token {TOKEN}":
                    self.reply(401, {"detail": "Invalid token."})
                    return False
                return True

            def do_GET(self) -> None:
                if not self.authorized():
                    return
                url = urlparse(self.path)
                query = parse_qs(url.query)
                if url.path == "/api/tasks" and query["project"] == ["7"]:
                    page, size = int(query["page"][0]), int(query["page_size"][0])
                    chunk = server.tasks[(page - 1) * size:page * size]
                    if page > 1 and not chunk:
                        self.reply(404, {"detail": "Invalid page."})
                    else:
                        self.reply(200, {"tasks": chunk, "total": len(server.tasks)})
                elif url.path == "/api/projects/7/export" and query["exportType"] == ["JSON"]:
                    self.reply(200, server.tasks)
                else:
                    self.reply(404, {"detail": "Not found."})

            def do_POST(self) -> None:
                if not self.authorized():
                    return
                if self.path != "/api/projects/7/import":
                    self.reply(404, {"detail": "Not found."})
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.import_calls += 1
                for task in body:
                    server.tasks.append({"id": len(server.tasks) + 1, "annotations": [], **task})
                self.reply(201, {"task_count": len(body), "annotation_count": 0,
                                 "prediction_count": len(body)})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def annotate(self, item_id: str, label: str, *, cancelled: bool = False,
                 updated_at: str = "2026-01-01T00:00:00Z") -> None:
        task = next(t for t in self.tasks if t["data"]["item_id"] == item_id)
        task["annotations"].append({
            "id": len(task["annotations"]) + 1, "was_cancelled": cancelled,
            "updated_at": updated_at,
            "result": [{"from_name": "label", "to_name": "image", "type": "choices",
                        "value": {"choices": [label]}}]})

    def __enter__(self) -> FakeLabelStudio:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
