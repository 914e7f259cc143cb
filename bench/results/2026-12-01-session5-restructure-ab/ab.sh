#!/bin/bash
# OLD and NEW: two sparq binaries; each converts bert-base-90/model.onnx to ab-old-*.sparq
# and ab-new-*.sparq first (sparq convert ... --precision int8|fp32).
O=${OLD:?sparq binary before}; N=${NEW:?sparq binary after}
for r in 1 2 3 4 5; do for p in int8 fp32; do for t in 1 2; do
  for side in old new; do
    B=$O; [ $side = new ] && B=$N
    out=$($B bench ab-$side-$p.sparq --threads $t --seq 128 --warmup 10 --iterations 60 --json)
    echo "$r $p $t $side $(echo "$out" | /usr/bin/python3 -c "import json,sys; d=json.load(sys.stdin); print(d['latency_ms']['p50'], d.get('load_ms','?'))")"
  done
done; done; done
