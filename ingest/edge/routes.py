"""The edge's routes: every path, method and handler, in one table."""

from __future__ import annotations

from aiohttp import web

from ingest.edge import admin, health, status, tasks


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/workflows/{token}/tasks", tasks.post_task)
    app.router.add_put("/api/v1/workflows/{token}/tasks", tasks.put_task)
    app.router.add_get("/api/v1/workflows/{token}/tasks", tasks.list_tasks)
    app.router.add_get("/api/v1/workflows/{token}/tasks/{task_id}", tasks.get_task)
    app.router.add_delete("/api/v1/workflows/{token}/tasks/{task_id}", tasks.delete_task)
    app.router.add_get("/api/v1/workflows/{token}/requests/{request_id}", status.request_status)
    app.router.add_get("/workflows/{workflow_id}/tasks/{task_id}", tasks.task_by_url)
    app.router.add_post("/api/v1/admin/workflows", admin.create_workflow)
    app.router.add_get("/api/v1/admin/workflows", admin.list_workflows)
    app.router.add_get("/api/v1/admin/workflows/{workflow_id}", admin.get_workflow)
    app.router.add_get("/api/v1/admin/workflows/{workflow_id}/example", admin.workflow_example)
    app.router.add_get("/api/v1/openapi.json", health.openapi_document)
    app.router.add_get("/api/v1/docs", health.openapi_docs)
    app.router.add_get("/metrics", health.metrics_page)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
