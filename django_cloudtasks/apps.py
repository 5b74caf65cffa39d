"""Django app configuration: discovers tasks, installs the canvas executor, registers checks."""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.apps import AppConfig


class CloudTasksConfig(AppConfig):
    """The ``django_cloudtasks`` app."""

    name = "django_cloudtasks"
    label = "django_cloudtasks"
    verbose_name = "Cloud Tasks workflows"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported here, as in every AppConfig: this module is loaded before models are.
        from django.core.signals import setting_changed
        from django.utils.module_loading import autodiscover_modules

        import canvas.executor
        from django_cloudtasks import (
            checks,  # noqa: F401 - registers the checks
            registry,
            signals,
            store,  # noqa: F401 - registers the database check
            telemetry,
        )
        from django_cloudtasks.results import AsyncResult
        from django_cloudtasks.runner import deliver
        from django_cloudtasks.schedules.runs import start_buffered_when_finished
        from django_cloudtasks.transports import install_delivery

        autodiscover_modules("tasks")
        registry.registry.mark_startup()
        canvas.executor.install(WorkflowExecutor())
        registry.result_type = AsyncResult
        install_delivery(deliver)
        telemetry.hooks.install()
        setting_changed.connect(_settings_changed, dispatch_uid="django_cloudtasks.settings")
        signals.workflow_finished.connect(
            start_buffered_when_finished, dispatch_uid="django_cloudtasks.schedules.buffer_one"
        )


def _settings_changed(setting: str, **kwargs: Any) -> None:
    if setting == "CLOUDTASKS":
        from django_cloudtasks.transports import reset_transport  # not above: see ready()

        reset_transport()


class WorkflowExecutor:
    """The canvas executor: persists expressions as workflows on this database."""

    def apply_async(self, expression: Any, options: dict[str, Any]) -> Any:
        """Persist ``expression`` and return the result handle of its last step."""
        # Not above: see ready().
        from django_cloudtasks import telemetry
        from django_cloudtasks.conf import conf
        from django_cloudtasks.engine import persist
        from django_cloudtasks.exceptions import EnqueueError
        from django_cloudtasks.results import result_for
        from django_cloudtasks.transports import get_transport

        with telemetry.hooks.submitting() as submission:
            try:
                persisted = persist(expression, options)
            except EnqueueError as exc:
                if exc.output is not None:  # saved: hand back its handle with the error
                    exc.result = result_for(exc.output)
                raise
            submission.created(str(persisted.workflow.pk), persisted.workflow.name)
        result = result_for(persisted.output)
        if conf.EAGER_PROPAGATES and get_transport().name == "eager" and result.failed():
            result.get(timeout=0)  # raises the task's exception (task_eager_propagates)
        return result

    async def aapply_async(self, expression: Any, options: dict[str, Any]) -> Any:
        """:meth:`apply_async` in a thread, as Django's async code reaches the database."""
        return await sync_to_async(self.apply_async)(expression, options)

    def call(self, signature: Any) -> Any:
        """Call ``signature``'s function in this process (Celery's ``sig()``)."""
        from django_cloudtasks.registry import call  # not above: see ready()

        return call(signature)

    def apply(self, signature: Any, options: dict[str, Any]) -> Any:
        """Run ``signature``'s task now, in process (Celery's ``sig.apply()``)."""
        from django_cloudtasks.registry import registry  # not above: see ready()

        task = registry.get(signature.task_name)
        return task.apply(signature.args, signature.kwargs, **{**signature.options, **options})
