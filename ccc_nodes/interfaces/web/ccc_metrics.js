// Shows the text a CCC++ node returns in its ui (the Metrics table, SAM Harmonize's note on an
// empty mask) in a read-only box on the node, at a readable size: a table widens the node to
// its lines (up to 1100 px), a note wraps at the node's own width (it must not cover the nodes
// beside it) and the node grows in height instead.
//
// It listens to the API's "executed" event instead of patching node prototypes (which
// ComfyUI's frontend marks deprecated), and the box is display only: not saved in the
// workflow's widgets_values and not sent back to the server as an input, so an unchanged
// second Run stays cached.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { ComfyWidgets } from "../../scripts/widgets.js";

const TEXT_NODES = { CCCMetrics: "table", CCCSAMHarmonize: "note" };
const CHAR_PX = 7.5; // 12 px monospace
const BOX = "ccc_text";

function showText(node, text, kind) {
  let widget = node.widgets?.find((w) => w.name === BOX);
  if (!widget) {
    widget = ComfyWidgets["STRING"](node, BOX, ["STRING", { multiline: true }], app).widget;
    widget.serialize = false; // not in widgets_values
    widget.options = { ...(widget.options ?? {}), serialize: false }; // not an input of the prompt
    if (widget.inputEl) {
      widget.inputEl.readOnly = true;
      widget.inputEl.style.fontFamily = "monospace";
      widget.inputEl.style.fontSize = "12px";
      widget.inputEl.style.whiteSpace = kind === "table" ? "pre" : "pre-wrap";
    }
  }
  widget.value = text;
  const lines = text.split("\n");
  const longest = Math.max(...lines.map((l) => l.length));
  const width = kind === "table" ? Math.min(1100, Math.max(node.size[0], CHAR_PX * longest + 40)) : node.size[0];
  const perLine = Math.max(1, Math.floor((width - 40) / CHAR_PX));
  const rows = lines.reduce((n, l) => n + Math.max(1, Math.ceil(l.length / perLine)), 0);
  const height = Math.max(node.computeSize([width, node.size[1]])[1], 90 + 16 * rows);
  node.setSize([width, height]);
  app.graph.setDirtyCanvas(true, true);
}

app.registerExtension({
  name: "ccc_nodes.text",
  setup() {
    api.addEventListener("executed", ({ detail }) => {
      const node = app.graph?.getNodeById(detail?.display_node ?? detail?.node);
      const text = detail?.output?.text;
      const kind = node && TEXT_NODES[node.comfyClass ?? node.type];
      if (!kind || !Array.isArray(text)) return;
      showText(node, text.join("\n"), kind);
    });
  },
});
