"""Live heatmaps: record exchange streams (``liqgpu record``) and keep a store current
(``liqgpu live``). Needs the ``live`` extra (``pip install 'liqgpu[live]'``: websockets)."""
