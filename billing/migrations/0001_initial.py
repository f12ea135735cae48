import django.db.models.deletion
from django.db import migrations, models


MOVED = ["invoice", "invoiceline"]


def move_content_types(apps, schema_editor):
    """Permissions granted on the models follow them (they hang on the content type)."""
    content_types = apps.get_model("contenttypes", "ContentType")
    taken = set(
        content_types.objects.filter(app_label="billing", model__in=MOVED).values_list(
            "model", flat=True
        )
    )
    content_types.objects.filter(app_label="tenants", model__in=set(MOVED) - taken).update(
        app_label="billing"
    )


def restore_content_types(apps, schema_editor):
    content_types = apps.get_model("contenttypes", "ContentType")
    content_types.objects.filter(app_label="billing", model__in=MOVED).update(app_label="tenants")


class Migration(migrations.Migration):
    """The invoice models, moved here from `tenants` with their tables (state only)."""

    initial = True

    dependencies = [
        ('contenttypes', '0002_remove_content_type_name'),
        ('tenants', '0006_invoice_models_move_to_billing'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            # The tables stay as they are (db_table): only Django's record of their app moves.
            state_operations=[
                migrations.CreateModel(
                    name='Invoice',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('number', models.CharField(max_length=64, unique=True)),
                        ('period_start', models.DateTimeField()),
                        ('period_end', models.DateTimeField()),
                        ('status', models.CharField(choices=[('draft', 'Draft'), ('finalized', 'Finalized')], default='draft', max_length=16)),
                        ('plan_name', models.CharField(blank=True, default='', max_length=100)),
                        ('currency', models.CharField(default='USD', max_length=3)),
                        ('total', models.DecimalField(decimal_places=4, max_digits=18, verbose_name='total')),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('updated_at', models.DateTimeField(auto_now=True)),
                        ('finalized_at', models.DateTimeField(blank=True, null=True)),
                        ('tenant', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='invoices', to='tenants.tenant')),
                    ],
                    options={
                        'db_table': 'tenants_invoice',
                        'ordering': ['-period_start', 'tenant_id'],
                    },
                ),
                migrations.CreateModel(
                    name='InvoiceLine',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('meter', models.CharField(choices=[('input_tokens', 'Input tokens'), ('cached_input_tokens', 'Cached input tokens'), ('output_tokens', 'Output tokens'), ('kv_gib_hours', 'KV cache GiB-hours')], max_length=32)),
                        ('description', models.CharField(max_length=200)),
                        ('quantity', models.DecimalField(decimal_places=12, max_digits=30)),
                        ('unit', models.CharField(max_length=32)),
                        ('unit_price', models.DecimalField(decimal_places=10, max_digits=20)),
                        ('amount', models.DecimalField(decimal_places=4, max_digits=18, verbose_name='amount')),
                        ('consumed', models.DecimalField(blank=True, decimal_places=9, max_digits=30, null=True)),
                        ('adjusts', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='adjusted_by', to='billing.invoice')),
                        ('invoice', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='lines', to='billing.invoice')),
                    ],
                    options={
                        'db_table': 'tenants_invoiceline',
                        'ordering': ['invoice_id', 'id'],
                    },
                ),
                migrations.AddConstraint(
                    model_name='invoice',
                    constraint=models.UniqueConstraint(fields=('tenant', 'period_start', 'period_end'), name='invoice_tenant_period'),
                ),
                migrations.AddConstraint(
                    model_name='invoice',
                    constraint=models.CheckConstraint(condition=models.Q(('period_end__gt', models.F('period_start'))), name='invoice_period_not_empty'),
                ),
                migrations.AddConstraint(
                    model_name='invoiceline',
                    constraint=models.UniqueConstraint(condition=models.Q(('adjusts__isnull', True)), fields=('invoice', 'meter'), name='invoice_line_meter'),
                ),
                migrations.AddConstraint(
                    model_name='invoiceline',
                    constraint=models.UniqueConstraint(condition=models.Q(('adjusts__isnull', False)), fields=('invoice', 'meter', 'adjusts'), name='invoice_line_meter_adjusts'),
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(move_content_types, restore_content_types),
    ]
