"""SLAVC's extended-protocol metrics written from the published loops (stoneMo/SLAVC `utils.py:EvaluatorFull`),
independently of keras_avloc: the reference the metric and protocol tests compare against."""

import numpy as np


def reference_pr(has_object, cious, confidences, conf_thr, ciou_thr):
    tp = fp = fn = 0
    for obj, value, conf in zip(has_object, cious, confidences):
        if not obj:
            fp += conf >= conf_thr
        elif conf >= conf_thr:
            tp += value >= ciou_thr
            fp += value < ciou_thr
        else:
            fn += 1
    precision = 1.0 if tp + fp == 0 else tp / (tp + fp)
    recall = 1.0 if tp + fn == 0 else tp / (tp + fn)
    return precision, recall


def reference_ap(has_object, cious, confidences, ciou_thr):
    skip = max(1, len(cious) // 200)
    precision, recall = [], []
    for thr in np.sort(np.array(confidences))[:-1][::-skip]:
        p, r = reference_pr(has_object, cious, confidences, thr, ciou_thr)
        precision.append(p)
        recall.append(r)
    p_max = [np.max(precision[i:]) for i in range(len(precision))]
    return sum(p_max[i] * (recall[i + 1] - recall[i]) for i in range(len(p_max) - 1))


def reference_vggss_area(boxes):
    """Ground-truth area on the 224 grid as SLAVC's `bbox2gtmap` draws VGG-SS boxes: clip to [0, 1], scale by
    224, truncate, fill rows ymin:ymax and columns xmin:xmax, binary union."""
    canvas = np.zeros((224, 224))
    for box in boxes:
        x1, y1, x2, y2 = (int(224 * min(max(value, 0.0), 1.0)) for value in box)
        canvas[y1:y2, x1:x2] = 1
    return float(canvas.sum())


def reference_table_entry(has_object, cious, confidences, keep, ciou_thr):
    """Precision, AP, max F1 and AUC of one subset, written from the published loops (independent of the module)."""
    idx = [i for i in range(len(keep)) if keep[i]]
    if not idx:
        return [None] * 4  # an empty subset has no value
    obj = [has_object[i] for i in idx]
    ious = [cious[i] for i in idx]
    conf = [confidences[i] for i in idx]
    precision = reference_pr(obj, ious, conf, -1000, ciou_thr)[0]
    ap = reference_ap(obj, ious, conf, ciou_thr)  # 0 below three samples: the loop has no recall step
    f1 = []
    for thr in sorted(conf)[:: max(1, len(conf) // 10)]:
        p, r = reference_pr(obj, ious, conf, thr, ciou_thr)
        f1.append(2 * p * r / (p + r) if p + r > 0 else 0.0)
    visible = [v for v, o in zip(ious, obj) if o]
    if visible:
        ts = [0.05 * i for i in range(21)]
        fr = [sum(v >= t for v in visible) / len(visible) for t in ts]
        auc = sum((ts[i + 1] - ts[i]) * (fr[i] + fr[i + 1]) / 2 for i in range(20))
    else:
        auc = float("nan")
    return [precision, ap, max(f1), auc]
