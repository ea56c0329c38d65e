"""The baseline of the intake benchmark: a bare Flask endpoint that parses the same JSON body.

Served with the agent's own gunicorn settings:
    gunicorn -c python:rollback_agent.gunicorn_conf --chdir agent/bench bare_app:app
"""

from __future__ import annotations

from flask import Flask, jsonify, request

app = Flask("bare")


@app.post("/api/admin/rollback/trigger")
def trigger():
    body = request.get_json(force=True)
    return jsonify({"status": "ignored", "alerts": len(body.get("alerts", []))}), 200


@app.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})
