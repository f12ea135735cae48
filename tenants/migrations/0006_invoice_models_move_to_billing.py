from django.db import migrations


class Migration(migrations.Migration):
    """The invoice models move to the `billing` app; their tables stay, rows and all."""

    dependencies = [
        ('tenants', '0005_usage_models_move_to_usage'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            # The tables stay as they are (db_table): only Django's record of their app moves.
            state_operations=[
                migrations.RemoveField(
                    model_name='invoiceline',
                    name='adjusts',
                ),
                migrations.RemoveField(
                    model_name='invoiceline',
                    name='invoice',
                ),
                migrations.DeleteModel(
                    name='Invoice',
                ),
                migrations.DeleteModel(
                    name='InvoiceLine',
                ),
            ],
            database_operations=[],
        ),
    ]
