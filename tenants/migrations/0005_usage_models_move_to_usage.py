from django.db import migrations


class Migration(migrations.Migration):
    """The usage models move to the `usage` app; their tables stay, rows and all."""

    dependencies = [
        ('tenants', '0004_invoice_adjustments'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            # The tables stay as they are (db_table): only Django's record of their app moves.
            state_operations=[
                migrations.DeleteModel(
                    name='RollupCursor',
                ),
                migrations.RemoveField(
                    model_name='tenantusagehour',
                    name='tenant',
                ),
                migrations.RemoveField(
                    model_name='usageday',
                    name='tenant',
                ),
                migrations.RemoveField(
                    model_name='usagehour',
                    name='tenant',
                ),
                migrations.RemoveField(
                    model_name='usageminute',
                    name='tenant',
                ),
                migrations.RemoveField(
                    model_name='usagerecord',
                    name='api_key',
                ),
                migrations.RemoveField(
                    model_name='usagerecord',
                    name='tenant',
                ),
                migrations.DeleteModel(
                    name='TenantUsageDay',
                ),
                migrations.DeleteModel(
                    name='TenantUsageHour',
                ),
                migrations.DeleteModel(
                    name='UsageDay',
                ),
                migrations.DeleteModel(
                    name='UsageHour',
                ),
                migrations.DeleteModel(
                    name='UsageMinute',
                ),
                migrations.DeleteModel(
                    name='UsageRecord',
                ),
            ],
            database_operations=[],
        ),
    ]
