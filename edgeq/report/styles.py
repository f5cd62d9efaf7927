"""The report page's stylesheet and Content-Security-Policy.

Inline, because the page must be one self-contained file; the policy forbids every request
(scripts, fonts, remote images), so the page reads the same offline as online.
"""

from __future__ import annotations

CSS = """
:root{--ink:#1f2937;--muted:#6b7280;--line:#e5e7eb;--bg:#f3f4f6;--card:#fff;--blue:#2563eb;
--orange:#ea580c;--warn-bg:#fff7ed;--warn:#9a3412;--good:#15803d;--bad:#b91c1c}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif;
color:var(--ink);background:var(--bg)}
header.page{background:#111827;color:#f9fafb;padding:18px 32px}
header.page h1{margin:0 0 4px;font-size:22px;font-weight:650}
header.page .sub{color:#cbd5e1;font-size:13px}
header.page nav{margin-top:10px;display:flex;flex-wrap:wrap;gap:6px 14px;font-size:13px}
header.page nav a{color:#bfdbfe;text-decoration:none}
main{max-width:1320px;margin:0 auto;padding:8px 28px 40px}
section.report-section{background:var(--card);border:1px solid var(--line);border-radius:10px;
padding:18px 24px 22px;margin:18px 0}
h2{margin:0 0 10px;font-size:19px}
h3{font-size:15px;margin:24px 0 10px;padding-bottom:4px;border-bottom:1px solid var(--line)}
h4{font-size:13.5px;margin:0 0 6px}
dl.meta{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:3px 28px;margin:0}
dl.meta div{display:flex;gap:10px;min-width:0}
dl.meta dt{color:var(--muted);flex:0 0 112px}
dl.meta dd{margin:0;overflow-wrap:anywhere}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px;margin:16px 0 6px}
.tile{border:1px solid var(--line);border-radius:8px;padding:9px 14px;background:#fafafa}
.tile .value{font-size:23px;font-weight:650;font-variant-numeric:tabular-nums;white-space:nowrap}
.tile .unit{font-size:14px;font-weight:500;color:var(--muted);margin-left:3px}
.tile .label{color:var(--muted);font-size:12px}
.tile.na .value{font-size:15px;font-weight:600;color:var(--warn);white-space:normal}
.table-wrap{overflow-x:auto}
table{border-collapse:collapse;font-variant-numeric:tabular-nums;margin:4px 0}
th,td{padding:5px 11px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
thead th{font-weight:600;color:var(--muted);font-size:12px;vertical-align:bottom;border-bottom:2px solid var(--line);
white-space:normal;min-width:56px}
table.compare thead th{max-width:104px}
td .sub{color:var(--muted);font-size:12px;margin-left:6px}
table.fixed{table-layout:fixed;width:100%}
table.fixed td.name{overflow:hidden;text-overflow:ellipsis;max-width:none}
th.name,td.name{text-align:left}
td.name{max-width:420px;overflow:hidden;text-overflow:ellipsis}
tr.ref td{background:#f9fafb}
td.muted,span.muted{color:var(--muted)}
.badge{display:inline-block;font-size:11px;padding:0 6px;border-radius:9px;margin-left:4px;
background:#ffedd5;color:var(--warn);font-weight:600}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(480px,1fr));gap:14px;margin-top:10px}
figure.plot{margin:0;border:1px solid var(--line);border-radius:8px;padding:10px 10px 8px}
figure.plot svg{display:block;margin:0 auto}
figure.plot figcaption{font-size:12.5px;color:var(--muted);margin-top:4px}
figure.plot figcaption strong{color:var(--ink)}
.notice{border-left:4px solid var(--orange);background:var(--warn-bg);padding:10px 14px;border-radius:4px;margin:12px 0}
.notice strong{color:var(--warn)}
p.note{color:var(--muted);font-size:12.5px;margin:6px 0}
.layers{display:grid;grid-template-columns:repeat(auto-fill,minmax(540px,1fr));gap:14px}
.layers table{font-size:12.5px}
td.name.tensor{white-space:normal;overflow-wrap:break-word;text-overflow:clip}
.layers .card{border:1px solid var(--line);border-radius:8px;padding:10px 12px}
.bar{display:inline-block;height:8px;border-radius:2px;background:var(--blue);vertical-align:middle}
.bar.low{background:var(--bad)}
footer{max-width:1320px;margin:0 auto;padding:0 28px 30px;color:var(--muted);font-size:12px}
@media print{body{background:#fff}section.report-section{break-inside:avoid-page}}
"""

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
