import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


MOVED = [
    "usagerecord",
    "usageminute",
    "usagehour",
    "usageday",
    "tenantusagehour",
    "tenantusageday",
    "rollupcursor",
]


def move_content_types(apps, schema_editor):
    """Permissions granted on the models follow them (they hang on the content type)."""
    content_types = apps.get_model("contenttypes", "ContentType")
    taken = set(
        content_types.objects.filter(app_label="usage", model__in=MOVED).values_list(
            "model", flat=True
        )
    )
    content_types.objects.filter(app_label="tenants", model__in=set(MOVED) - taken).update(
        app_label="usage"
    )


def restore_content_types(apps, schema_editor):
    content_types = apps.get_model("contenttypes", "ContentType")
    content_types.objects.filter(app_label="usage", model__in=MOVED).update(app_label="tenants")


class Migration(migrations.Migration):
    """The usage models, moved here from `tenants` with their tables (state only)."""

    dependencies = [
        ('tenants', '0005_usage_models_move_to_usage'),
        ('usage', '0001_initial'),
        ('contenttypes', '0002_remove_content_type_name'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            # The tables stay as they are (db_table): only Django's record of their app moves.
            state_operations=[
                migrations.CreateModel(
                    name='RollupCursor',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('name', models.CharField(max_length=32, unique=True)),
                        ('created_at', models.DateTimeField()),
                        ('record_id', models.BigIntegerField(default=0)),
                        ('updated_at', models.DateTimeField(auto_now=True)),
                    ],
                    options={
                        'db_table': 'tenants_rollupcursor',
                    },
                ),
                migrations.CreateModel(
                    name='TenantUsageDay',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('num_requests', models.PositiveBigIntegerField(default=0)),
                        ('num_aborted', models.PositiveBigIntegerField(default=0)),
                        ('num_errors', models.PositiveBigIntegerField(default=0)),
                        ('num_with_ttft', models.PositiveBigIntegerField(default=0)),
                        ('prompt_tokens', models.PositiveBigIntegerField(default=0)),
                        ('cached_tokens', models.PositiveBigIntegerField(default=0)),
                        ('output_tokens', models.PositiveBigIntegerField(default=0)),
                        ('kv_block_seconds', models.FloatField(default=0.0)),
                        ('kv_gib_seconds', models.DecimalField(decimal_places=9, default=0, max_digits=24, verbose_name='KV cache GiB-seconds')),
                        ('preemptions', models.PositiveBigIntegerField(default=0)),
                        ('queue_ms_sum', models.PositiveBigIntegerField(default=0)),
                        ('ttft_ms_sum', models.PositiveBigIntegerField(default=0)),
                        ('latency_ms_sum', models.PositiveBigIntegerField(default=0)),
                        ('ttft_hist', models.JSONField(blank=True, editable=False, null=True)),
                        ('latency_hist', models.JSONField(blank=True, editable=False, null=True)),
                        ('ttft_p50_ms', models.FloatField(blank=True, editable=False, null=True)),
                        ('ttft_p95_ms', models.FloatField(blank=True, editable=False, null=True)),
                        ('latency_p95_ms', models.FloatField(blank=True, editable=False, null=True)),
                        ('day', models.DateTimeField()),
                        ('tenant', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='+', to='tenants.tenant')),
                    ],
                    options={
                        'db_table': 'tenants_tenantusageday',
                        'ordering': ['-day', 'tenant_id'],
                        'indexes': [models.Index(fields=['tenant', 'day'], name='tenant_usage_day_tenant')],
                        'constraints': [models.UniqueConstraint(fields=('day', 'tenant'), name='tenant_usage_day_key')],
                    },
                ),
                migrations.CreateModel(
                    name='TenantUsageHour',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('num_requests', models.PositiveBigIntegerField(default=0)),
                        ('num_aborted', models.PositiveBigIntegerField(default=0)),
                        ('num_errors', models.PositiveBigIntegerField(default=0)),
                        ('num_with_ttft', models.PositiveBigIntegerField(default=0)),
                        ('prompt_tokens', models.PositiveBigIntegerField(default=0)),
                        ('cached_tokens', models.PositiveBigIntegerField(default=0)),
                        ('output_tokens', models.PositiveBigIntegerField(default=0)),
                        ('kv_block_seconds', models.FloatField(default=0.0)),
                        ('kv_gib_seconds', models.DecimalField(decimal_places=9, default=0, max_digits=24, verbose_name='KV cache GiB-seconds')),
                        ('preemptions', models.PositiveBigIntegerField(default=0)),
                        ('queue_ms_sum', models.PositiveBigIntegerField(default=0)),
                        ('ttft_ms_sum', models.PositiveBigIntegerField(default=0)),
                        ('latency_ms_sum', models.PositiveBigIntegerField(default=0)),
                        ('ttft_hist', models.JSONField(blank=True, editable=False, null=True)),
                        ('latency_hist', models.JSONField(blank=True, editable=False, null=True)),
                        ('ttft_p50_ms', models.FloatField(blank=True, editable=False, null=True)),
                        ('ttft_p95_ms', models.FloatField(blank=True, editable=False, null=True)),
                        ('latency_p95_ms', models.FloatField(blank=True, editable=False, null=True)),
                        ('hour', models.DateTimeField()),
                        ('tenant', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='+', to='tenants.tenant')),
                    ],
                    options={
                        'db_table': 'tenants_tenantusagehour',
                        'ordering': ['-hour', 'tenant_id'],
                        'indexes': [models.Index(fields=['tenant', 'hour'], name='tenant_usage_hour_tenant')],
                        'constraints': [models.UniqueConstraint(fields=('hour', 'tenant'), name='tenant_usage_hour_key')],
                    },
                ),
                migrations.CreateModel(
                    name='UsageDay',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('num_requests', models.PositiveBigIntegerField(default=0)),
                        ('num_aborted', models.PositiveBigIntegerField(default=0)),
                        ('num_errors', models.PositiveBigIntegerField(default=0)),
                        ('num_with_ttft', models.PositiveBigIntegerField(default=0)),
                        ('prompt_tokens', models.PositiveBigIntegerField(default=0)),
                        ('cached_tokens', models.PositiveBigIntegerField(default=0)),
                        ('output_tokens', models.PositiveBigIntegerField(default=0)),
                        ('kv_block_seconds', models.FloatField(default=0.0)),
                        ('kv_gib_seconds', models.DecimalField(decimal_places=9, default=0, max_digits=24, verbose_name='KV cache GiB-seconds')),
                        ('preemptions', models.PositiveBigIntegerField(default=0)),
                        ('queue_ms_sum', models.PositiveBigIntegerField(default=0)),
                        ('ttft_ms_sum', models.PositiveBigIntegerField(default=0)),
                        ('latency_ms_sum', models.PositiveBigIntegerField(default=0)),
                        ('ttft_hist', models.JSONField(blank=True, editable=False, null=True)),
                        ('latency_hist', models.JSONField(blank=True, editable=False, null=True)),
                        ('ttft_p50_ms', models.FloatField(blank=True, editable=False, null=True)),
                        ('ttft_p95_ms', models.FloatField(blank=True, editable=False, null=True)),
                        ('latency_p95_ms', models.FloatField(blank=True, editable=False, null=True)),
                        ('api_key_id', models.BigIntegerField(default=0)),
                        ('model', models.CharField(max_length=200)),
                        ('app', models.CharField(blank=True, default='', max_length=100)),
                        ('day', models.DateTimeField()),
                        ('tenant', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='usage_days', to='tenants.tenant')),
                    ],
                    options={
                        'db_table': 'tenants_usageday',
                        'ordering': ['-day', 'tenant_id', 'api_key_id', 'model', 'app'],
                        'indexes': [models.Index(fields=['tenant', 'day'], name='usage_day_tenant')],
                        'constraints': [models.UniqueConstraint(fields=('day', 'tenant', 'api_key_id', 'model', 'app'), name='usage_day_key')],
                    },
                ),
                migrations.CreateModel(
                    name='UsageHour',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('num_requests', models.PositiveBigIntegerField(default=0)),
                        ('num_aborted', models.PositiveBigIntegerField(default=0)),
                        ('num_errors', models.PositiveBigIntegerField(default=0)),
                        ('num_with_ttft', models.PositiveBigIntegerField(default=0)),
                        ('prompt_tokens', models.PositiveBigIntegerField(default=0)),
                        ('cached_tokens', models.PositiveBigIntegerField(default=0)),
                        ('output_tokens', models.PositiveBigIntegerField(default=0)),
                        ('kv_block_seconds', models.FloatField(default=0.0)),
                        ('kv_gib_seconds', models.DecimalField(decimal_places=9, default=0, max_digits=24, verbose_name='KV cache GiB-seconds')),
                        ('preemptions', models.PositiveBigIntegerField(default=0)),
                        ('queue_ms_sum', models.PositiveBigIntegerField(default=0)),
                        ('ttft_ms_sum', models.PositiveBigIntegerField(default=0)),
                        ('latency_ms_sum', models.PositiveBigIntegerField(default=0)),
                        ('ttft_hist', models.JSONField(blank=True, editable=False, null=True)),
                        ('latency_hist', models.JSONField(blank=True, editable=False, null=True)),
                        ('ttft_p50_ms', models.FloatField(blank=True, editable=False, null=True)),
                        ('ttft_p95_ms', models.FloatField(blank=True, editable=False, null=True)),
                        ('latency_p95_ms', models.FloatField(blank=True, editable=False, null=True)),
                        ('api_key_id', models.BigIntegerField(default=0)),
                        ('model', models.CharField(max_length=200)),
                        ('app', models.CharField(blank=True, default='', max_length=100)),
                        ('hour', models.DateTimeField()),
                        ('tenant', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='usage_hours', to='tenants.tenant')),
                    ],
                    options={
                        'db_table': 'tenants_usagehour',
                        'ordering': ['-hour', 'tenant_id', 'api_key_id', 'model', 'app'],
                        'indexes': [models.Index(fields=['tenant', 'hour'], name='usage_hour_tenant')],
                        'constraints': [models.UniqueConstraint(fields=('hour', 'tenant', 'api_key_id', 'model', 'app'), name='usage_hour_key')],
                    },
                ),
                migrations.CreateModel(
                    name='UsageMinute',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('num_requests', models.PositiveBigIntegerField(default=0)),
                        ('num_aborted', models.PositiveBigIntegerField(default=0)),
                        ('num_errors', models.PositiveBigIntegerField(default=0)),
                        ('num_with_ttft', models.PositiveBigIntegerField(default=0)),
                        ('prompt_tokens', models.PositiveBigIntegerField(default=0)),
                        ('cached_tokens', models.PositiveBigIntegerField(default=0)),
                        ('output_tokens', models.PositiveBigIntegerField(default=0)),
                        ('kv_block_seconds', models.FloatField(default=0.0)),
                        ('kv_gib_seconds', models.DecimalField(decimal_places=9, default=0, max_digits=24, verbose_name='KV cache GiB-seconds')),
                        ('preemptions', models.PositiveBigIntegerField(default=0)),
                        ('queue_ms_sum', models.PositiveBigIntegerField(default=0)),
                        ('ttft_ms_sum', models.PositiveBigIntegerField(default=0)),
                        ('latency_ms_sum', models.PositiveBigIntegerField(default=0)),
                        ('ttft_hist', models.JSONField(blank=True, editable=False, null=True)),
                        ('latency_hist', models.JSONField(blank=True, editable=False, null=True)),
                        ('ttft_p50_ms', models.FloatField(blank=True, editable=False, null=True)),
                        ('ttft_p95_ms', models.FloatField(blank=True, editable=False, null=True)),
                        ('latency_p95_ms', models.FloatField(blank=True, editable=False, null=True)),
                        ('api_key_id', models.BigIntegerField(default=0)),
                        ('model', models.CharField(max_length=200)),
                        ('app', models.CharField(blank=True, default='', max_length=100)),
                        ('minute', models.DateTimeField()),
                        ('tenant', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='usage_minutes', to='tenants.tenant')),
                    ],
                    options={
                        'db_table': 'tenants_usageminute',
                        'ordering': ['-minute', 'tenant_id', 'api_key_id', 'model', 'app'],
                        'indexes': [models.Index(fields=['tenant', 'minute'], name='usage_minute_tenant')],
                        'constraints': [models.UniqueConstraint(fields=('minute', 'tenant', 'api_key_id', 'model', 'app'), name='usage_minute_key')],
                    },
                ),
                migrations.CreateModel(
                    name='UsageRecord',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('request_id', models.CharField(max_length=100, unique=True)),
                        ('model', models.CharField(max_length=200)),
                        ('app', models.CharField(blank=True, default='', max_length=100)),
                        ('prompt_tokens', models.PositiveBigIntegerField(default=0)),
                        ('cached_tokens', models.PositiveBigIntegerField(default=0)),
                        ('output_tokens', models.PositiveBigIntegerField(default=0)),
                        ('kv_block_seconds', models.FloatField(default=0.0)),
                        ('kv_gib_seconds', models.DecimalField(decimal_places=9, default=0, max_digits=24, verbose_name='KV cache GiB-seconds')),
                        ('peak_blocks', models.PositiveIntegerField(default=0)),
                        ('preemptions', models.PositiveIntegerField(default=0)),
                        ('queue_ms', models.PositiveBigIntegerField(default=0)),
                        ('ttft_ms', models.PositiveBigIntegerField(blank=True, null=True)),
                        ('latency_ms', models.PositiveBigIntegerField(default=0)),
                        ('status', models.CharField(choices=[('finished', 'Finished'), ('aborted', 'Aborted'), ('error', 'Error')], max_length=16)),
                        ('finished_at', models.DateTimeField(db_index=True)),
                        ('created_at', models.DateTimeField(default=django.utils.timezone.now, editable=False)),
                        ('api_key', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='usage_records', to='tenants.apikey')),
                        ('tenant', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='usage_records', to='tenants.tenant')),
                    ],
                    options={
                        'db_table': 'tenants_usagerecord',
                        'ordering': ['-finished_at', '-id'],
                        'indexes': [models.Index(fields=['tenant', 'finished_at'], name='usage_tenant_finished'), models.Index(fields=['created_at', 'id'], name='usage_created')],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(move_content_types, restore_content_types),
    ]
