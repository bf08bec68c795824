"""Reference values for nudge's repurchase models, from the `lifetimes`
Python package (an independent implementation of BG/NBD and Gamma-Gamma).

Reads the CDNOW sample as nudge ingests it (examples/cdnow/events.ndjson),
takes the calibration period to 1997-09-30 (purchases grouped by day, time
in days, as nudge counts them), fits both models and writes per-member
p_alive and expected purchases in the next 90 days, with the fitted
parameters and the holdout check's totals (purchase days expected and seen
from 1997-10-01 to 1998-06-30) in the header, to
tests/predict/cdnow_lifetimes.csv.

Run from the repository root (once; the output is kept in the repository):
    python3 -m venv /tmp/lt && /tmp/lt/bin/pip install lifetimes==0.11.3
    /tmp/lt/bin/python scripts/lifetimes_reference.py

Both fits use lifetimes' default tolerance (a tighter one does not converge
in its optimiser).
"""

import json

import pandas as pd
from lifetimes import BetaGeoFitter, GammaGammaFitter
from lifetimes.utils import summary_data_from_transaction_data

rows = []
with open("examples/cdnow/events.ndjson") as f:
    for line in f:
        e = json.loads(line)
        if e["type"] == "purchase":
            rows.append((e["member"], e["at"][:10], float(e["amount"])))
tx = pd.DataFrame(rows, columns=["member", "date", "amount"])
tx["date"] = pd.to_datetime(tx["date"])
end = "1997-09-30"
cal = tx[tx["date"] <= end]
s = summary_data_from_transaction_data(
    cal, "member", "date", monetary_value_col="amount", observation_period_end=end, freq="D"
)
bg = BetaGeoFitter(penalizer_coef=0.0)
bg.fit(s["frequency"], s["recency"], s["T"])
p = bg.params_
repeat = s[s["frequency"] > 0]
gg = GammaGammaFitter(penalizer_coef=0.0)
gg.fit(repeat["frequency"], repeat["monetary_value"])
g = gg.params_
alive = bg.conditional_probability_alive(s["frequency"], s["recency"], s["T"])
e90 = bg.conditional_expected_number_of_purchases_up_to_time(90, s["frequency"], s["recency"], s["T"])
# The holdout check: purchase days the fit expects in the 273 days after the
# calibration (1997-10-01 to 1998-06-30) against the distinct days that came.
held = bg.conditional_expected_number_of_purchases_up_to_time(273, s["frequency"], s["recency"], s["T"]).sum()
after = tx[(tx["date"] > end) & (tx["date"] <= "1998-06-30")][["member", "date"]].drop_duplicates()
with open("tests/predict/cdnow_lifetimes.csv", "w") as out:
    out.write("# lifetimes 0.11.3, scripts/lifetimes_reference.py; CDNOW calibration to 1997-09-30, days\n")
    out.write(
        f"# bgnbd r={p['r']:.10f} alpha={p['alpha']:.10f} a={p['a']:.10f} b={p['b']:.10f}\n"
    )
    out.write(f"# gamma_gamma p={g['p']:.10f} q={g['q']:.10f} v={g['v']:.10f}\n")
    out.write(f"# holdout from=1997-10-01 to=1998-06-30 predicted={held:.4f} actual_days={len(after)}\n")
    out.write("member,x,t_x,T,p_alive,expected_90d\n")
    for (m, r), a, n in zip(s.iterrows(), alive, e90):
        out.write(
            f"{m},{int(r['frequency'])},{int(r['recency'])},{int(r['T'])},{a:.10f},{n:.10f}\n"
        )
print(p.to_dict(), g.to_dict())
