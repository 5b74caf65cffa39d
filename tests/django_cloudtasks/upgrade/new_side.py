"""Run by this library on a database: migrate, check what the original stored, run
workflows, and print the schema and what happened as JSON."""

import json
import os
import sys

import django
from django.conf import settings

settings.configure(
    SECRET_KEY="upgrade-test",
    USE_TZ=True,
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["*"],
    INSTALLED_APPS=[
        "django.contrib.admin",
        "django.contrib.auth",
        "django.contrib.contenttypes",
        "django.contrib.sessions",
        "django.contrib.messages",
        "django_cloudtasks",
    ],
    MIDDLEWARE=[
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
    ],
    TEMPLATES=[
        {
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "APP_DIRS": True,
            "OPTIONS": {
                "context_processors": [
                    "django.template.context_processors.request",
                    "django.contrib.auth.context_processors.auth",
                    "django.contrib.messages.context_processors.messages",
                ]
            },
        }
    ],
    DATABASES={"default": json.loads(os.environ["UPGRADE_DATABASE"])},
    DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
    CLOUDTASKS={"AUTH_TOKEN": "upgrade-token", "BASE_URL": "http://testserver"},
)
django.setup()

from django.contrib import admin  # noqa: E402
from django.urls import include, path  # noqa: E402

urlpatterns = [
    path("admin/", admin.site.urls),
    path("cloudtasks/", include("django_cloudtasks.urls")),
]

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402


def schema():
    """Columns and constraints of the app's tables, comparable across installs."""
    out = {}
    with connection.cursor() as cursor:
        tables = [
            t
            for t in connection.introspection.table_names(cursor)
            if t.startswith("django_cloudtasks_")
        ]
        for table in sorted(tables):
            columns = sorted(
                (c.name, str(c.type_code), bool(c.null_ok))
                for c in connection.introspection.get_table_description(cursor, table)
            )
            constraints = sorted(
                (
                    sorted(info["columns"] or []),
                    bool(info["unique"]),
                    bool(info["primary_key"]),
                    bool(info["index"]),
                    tuple(info["foreign_key"] or ()),
                    str(info.get("definition") or ""),
                )
                for info in connection.introspection.get_constraints(cursor, table).values()
            )
            out[table] = {"columns": columns, "constraints": constraints}
    return out


def main(mode):
    call_command("migrate", verbosity=0)
    if mode == "schema":
        print(json.dumps({"schema": schema()}))
        return

    from django.contrib.auth.models import User
    from django.test import Client

    from canvas import chain, group
    from django_cloudtasks.decorators import register_task
    from django_cloudtasks.manager import CloudChainManager
    from django_cloudtasks.models import CloudChain, CloudTask
    from django_cloudtasks.utils import revoke_chain

    @register_task
    def sum(a, b):
        return a + b

    chain_mgr = CloudChainManager()
    chain_mgr.add_task("sum", {"a": 4, "b": 5})
    chain_mgr.add_task("sum", {"b": 10})
    readme = chain_mgr.run().get(timeout=10)

    canvas = chain(group(sum.si(1, 2), sum.si(3, 4)), sum.s(b=[0])).apply_async()
    fan = group(sum.si(1, 2), sum.si(3, 4)).apply_async().get(timeout=10)

    User.objects.create_superuser("admin", "admin@example.com", "pw")
    client = Client()
    client.force_login(User.objects.get(username="admin"))
    old_chain = CloudChain.objects.order_by("created_at").first()
    pages = {
        "chains": client.get("/admin/django_cloudtasks/cloudchain/").status_code,
        "chain": old_chain
        and client.get(f"/admin/django_cloudtasks/cloudchain/{old_chain.pk}/change/").status_code,
        "tasks": client.get("/admin/django_cloudtasks/cloudtask/").status_code,
        "workflows": client.get("/admin/django_cloudtasks/workflow/").status_code,
    }
    print(
        json.dumps(
            {
                "readme": readme,
                "chain_status": chain_mgr.chain.status,
                "revoke_unknown": revoke_chain("00000000-0000-0000-0000-000000000000"),
                "group": fan,
                "canvas": canvas.get(timeout=10),
                "old_chains": {str(c.pk): c.status for c in CloudChain.objects.all()},
                "old_results": sorted(
                    t.execution_result for t in CloudTask.objects.filter(is_group=False)
                ),
                "pages": pages,
                "schema": schema(),
            }
        )
    )


main(sys.argv[1])
