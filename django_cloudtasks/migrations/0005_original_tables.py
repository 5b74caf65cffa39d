"""The original package's tables (1.x), kept with their rows as read-only history.

A database migrated by 1.x already has them (its 0001_initial created them) and keeps
them as they are; anywhere else they are created empty, so that every install ends with
the same schema.
"""

import django.db.models.deletion
import django.utils.timezone
import uuid
from django.db import migrations, models

from django_cloudtasks.migrations._tables import CreateModelIfMissing


class Migration(migrations.Migration):

    dependencies = [
        ('django_cloudtasks', '0004_node_fillfactor'),
    ]

    operations = [
        CreateModelIfMissing(
            name='CloudChain',
            fields=[
                ('id', models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                ('status', models.CharField(choices=[('PENDING', 'Pending'), ('RUNNING', 'Running'), ('SUCCESS', 'Success'), ('FAILED', 'Failed')], default='PENDING', max_length=20)),
                ('result', models.JSONField(blank=True, default=None, null=True)),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('parent_chain', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='children', to='django_cloudtasks.cloudchain')),
            ],
            options={
                'verbose_name': 'chain from 1.x',
                'verbose_name_plural': 'chains from 1.x',
                'ordering': ['-created_at'],
            },
        ),
        CreateModelIfMissing(
            name='CloudTask',
            fields=[
                ('id', models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                ('endpoint_path', models.CharField(blank=True, max_length=255, null=True)),
                ('payload', models.JSONField(default=dict)),
                ('delay_seconds', models.PositiveIntegerField(default=0)),
                ('is_group', models.BooleanField(default=False)),
                ('status', models.CharField(choices=[('PENDING', 'Pending'), ('SCHEDULED', 'Scheduled'), ('SUCCESS', 'Success'), ('FAILED', 'Failed'), ('ERROR', 'Error'), ('REVOKED', 'Revoked')], default='PENDING', max_length=20)),
                ('execution_result', models.JSONField(blank=True, null=True)),
                ('external_task_name', models.CharField(blank=True, max_length=500, null=True)),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('chain', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='tasks', to='django_cloudtasks.cloudchain')),
                ('next_task', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='django_cloudtasks.cloudtask')),
                ('parent', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='children', to='django_cloudtasks.cloudtask')),
            ],
            options={
                'verbose_name': 'task from 1.x',
                'verbose_name_plural': 'tasks from 1.x',
                'ordering': ['chain', 'created_at'],
            },
        ),
    ]
