"""Run by the original package (1.9.0) in its own virtualenv: migrate, then run the
original README's chain in its DEBUG mode. Prints what it stored as JSON."""

import json
import os

import django
from django.conf import settings

settings.configure(
    SECRET_KEY="upgrade-test",
    USE_TZ=True,
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "django_cloudtasks"],
    DATABASES={"default": json.loads(os.environ["UPGRADE_DATABASE"])},
    DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
)
django.setup()

from django.urls import include, path  # noqa: E402

urlpatterns = [path("cloudtasks/", include("django_cloudtasks.urls"))]

from django.core.management import call_command  # noqa: E402

call_command("migrate", verbosity=0)

from django_cloudtasks.decorators import register_task  # noqa: E402
from django_cloudtasks.manager import CloudChainManager  # noqa: E402
from django_cloudtasks.models import CloudChain, CloudTask  # noqa: E402


@register_task
def sum(a, b):  # the README's name
    return a + b


chain_mgr = CloudChainManager()
chain_mgr.add_task("sum", {"a": 4, "b": 5})
chain_mgr.add_task("sum", {"b": 10})  # auto-inject result from previous task into 'a'
chain_mgr.run()

group_mgr = CloudChainManager()
group_mgr.add_group(
    [
        {"endpoint_path": "sum", "payload": {"a": 3, "b": 3}},
        {"endpoint_path": "sum", "payload": {"a": 7, "b": 2}},
    ]
)
group_mgr.run()

print(
    json.dumps(
        {
            "chains": {
                str(c.pk): c.status
                for c in CloudChain.objects.filter(pk__in=[chain_mgr.chain.pk, group_mgr.chain.pk])
            },
            "results": sorted(t.execution_result for t in CloudTask.objects.filter(is_group=False)),
            "tasks": CloudTask.objects.count(),
        }
    )
)
