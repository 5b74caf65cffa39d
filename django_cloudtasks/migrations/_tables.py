"""Migration operations that create a table only where it is missing.

The original ``django-gcp-cloudtasks`` (1.x) shipped its own ``0001_initial`` under the
same app label. A database it migrated records ``django_cloudtasks.0001_initial`` as
applied although it holds the 1.x tables (``cloudchain``, ``cloudtask``) instead of this
version's (``workflow``, ``node``); a database of version 0.2 records the same name with
the opposite tables. The record alone cannot tell them apart, so these operations look
at the schema.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations


def _existing_tables(schema_editor: Any) -> set[str]:
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        return set(connection.introspection.table_names(cursor))


class CreateMissingTables(migrations.operations.base.Operation):
    """Create the tables of ``model_names``, as the migration state has them, if absent.

    It changes no state: it makes the database match a state that an earlier migration
    (recorded as applied under a name another package also used) should have built.
    Going backwards it does nothing: it cannot know whether it created the tables.
    """

    reduces_to_sql = False
    reversible = True

    def __init__(self, model_names: list[str]) -> None:
        self.model_names = list(model_names)

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        return (self.__class__.__qualname__, [self.model_names], {})

    def state_forwards(self, app_label: str, state: Any) -> None:
        pass

    def database_forwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        existing = _existing_tables(schema_editor)
        for name in self.model_names:
            model = to_state.apps.get_model(app_label, name)
            if model._meta.db_table not in existing and self.allow_migrate_model(
                schema_editor.connection.alias, model
            ):
                schema_editor.create_model(model)

    def database_backwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        pass

    def describe(self) -> str:
        return f"Create the tables of {', '.join(self.model_names)} where they are missing"


class CreateModelIfMissing(migrations.CreateModel):
    """``CreateModel`` whose table is kept when it already exists, with its rows.

    Going backwards the table stays too: it may hold data written by the original
    package, which a migration must not drop.
    """

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        _, args, kwargs = super().deconstruct()
        return (self.__class__.__qualname__, list(args), kwargs)

    def database_forwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        model = to_state.apps.get_model(app_label, self.name)
        if model._meta.db_table in _existing_tables(schema_editor):
            return
        super().database_forwards(app_label, schema_editor, from_state, to_state)

    def database_backwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        pass
