// Shows the text a CCC++ node returns in its ui (the Metrics table, SAM Harmonize's note on an
// empty mask) in a read-only box on the node, at a readable size.
//
// It listens to the API's "executed" event instead of patching node prototypes (which
// ComfyUI's frontend marks deprecated), and the box is display only: not saved in the
// workflow's widgets_values and not sent back to the server as an input, so an unchanged
// second Run stays cached.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { ComfyWidgets } from "../../scripts/widgets.js";

const TEXT_NODES = new Set(["CCCMetrics", "CCCSAMHarmonize"]);
const BOX = "ccc_text";

function showText(node, text) {
  let widget = node.widgets?.find((w) => w.name === BOX);
  if (!widget) {
    widget = ComfyWidgets["STRING"](node, BOX, ["STRING", { multiline: true }], app).widget;
    widget.serialize = false; // not in widgets_values
    widget.options = { ...(widget.options ?? {}), serialize: false }; // not an input of the prompt
    if (widget.inputEl) {
      widget.inputEl.readOnly = true;
      widget.inputEl.style.fontFamily = "monospace";
      widget.inputEl.style.fontSize = "12px";
      widget.inputEl.style.whiteSpace = "pre";
    }
  }
  widget.value = text;
  const lines = text.split("\n");
  const width = Math.min(1100, Math.max(node.size[0], 7.5 * Math.max(...lines.map((l) => l.length)) + 40));
  const height = Math.max(node.computeSize([width, node.size[1]])[1], 90 + 16 * lines.length);
  node.setSize([width, height]);
  app.graph.setDirtyCanvas(true, true);
}

app.registerExtension({
  name: "ccc_nodes.text",
  setup() {
    api.addEventListener("executed", ({ detail }) => {
      const node = app.graph?.getNodeById(detail?.display_node ?? detail?.node);
      const text = detail?.output?.text;
      if (!node || !TEXT_NODES.has(node.comfyClass ?? node.type) || !Array.isArray(text)) return;
      showText(node, text.join("\n"));
    });
  },
});
