// Shows the table of the CCC++ Metrics node (its ui.text) in a read-only text box on the node.
import { app } from "../../scripts/app.js";
import { ComfyWidgets } from "../../scripts/widgets.js";

app.registerExtension({
  name: "ccc_nodes.metrics",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== "CCCMetrics") return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      let widget = this.widgets?.find((w) => w.name === "metrics");
      if (!widget) {
        widget = ComfyWidgets["STRING"](this, "metrics", ["STRING", { multiline: true }], app).widget;
        if (widget.inputEl) widget.inputEl.readOnly = true;
      }
      widget.value = (message?.text ?? []).join("\n");
      this.setSize?.(this.computeSize());
    };
  },
});
