"""Leave room on each page of the node table (PostgreSQL).

A group's join row is updated once by every member. With free space on its page those
updates stay on the page (heap-only tuples) and their old versions are pruned there,
instead of each one adding index entries that later lookups of the join must skip.
"""

from django.db import migrations

FILLFACTOR = 80


def _set(apps, schema_editor, value):
    if schema_editor.connection.vendor != "postgresql":
        return
    table = schema_editor.quote_name(apps.get_model("django_cloudtasks", "Node")._meta.db_table)
    schema_editor.execute(f"ALTER TABLE {table} SET (fillfactor = {int(value)})")


def forwards(apps, schema_editor):
    _set(apps, schema_editor, FILLFACTOR)


def backwards(apps, schema_editor):
    _set(apps, schema_editor, 100)


class Migration(migrations.Migration):
    dependencies = [("django_cloudtasks", "0003_node_fewer_indexes")]

    operations = [migrations.RunPython(forwards, backwards, elidable=False)]
