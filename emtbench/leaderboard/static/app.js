
(function () {
  "use strict";
  var table = document.getElementById("board");
  var body = table.tBodies[0];
  var rows = Array.prototype.slice.call(body.rows);
  var heads = table.tHead.rows[0].cells;
  var search = document.getElementById("filter");
  var method = document.getElementById("method");
  var count = document.getElementById("count");
  var sorted = -1, ascending = true;
  function key(row, column) {
    var cell = row.cells[column];
    if (cell.hasAttribute("data-v")) {
      var raw = cell.getAttribute("data-v");
      return raw === "" ? null : parseFloat(raw);
    }
    return cell.textContent.toLowerCase();
  }
  function sortBy(column) {
    ascending = sorted === column ? !ascending : heads[column].getAttribute("data-first") !== "desc";
    sorted = column;
    var sign = ascending ? 1 : -1;
    rows.sort(function (a, b) {
      var x = key(a, column), y = key(b, column);
      if (x === null || y === null) { return x === y ? 0 : (x === null ? 1 : -1); }
      return x < y ? -sign : (x > y ? sign : 0);
    });
    var fragment = document.createDocumentFragment();
    rows.forEach(function (row) { fragment.appendChild(row); });
    body.appendChild(fragment);
    for (var i = 0; i < heads.length; i++) { heads[i].removeAttribute("aria-sort"); }
    heads[column].setAttribute("aria-sort", ascending ? "ascending" : "descending");
  }
  for (var i = 0; i < heads.length; i++) {
    heads[i].addEventListener("click", sortBy.bind(null, i));
  }
  function applyFilter() {
    var query = search.value.trim().toLowerCase(), wanted = method.value, shown = 0;
    rows.forEach(function (row) {
      var visible = row.getAttribute("data-search").indexOf(query) !== -1 &&
        (wanted === "" || row.getAttribute("data-method") === wanted);
      row.hidden = !visible;
      if (visible) { shown++; }
    });
    count.textContent = shown + " of " + rows.length + " runs";
  }
  search.addEventListener("input", applyFilter);
  method.addEventListener("change", applyFilter);
  applyFilter();
})();
