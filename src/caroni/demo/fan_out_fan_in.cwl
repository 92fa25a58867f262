# Demo template "fan_out_fan_in": split a text, work on both halves side by side,
# join the results and frame them.
#
#                  +-> process_left (shout) ---+
#   split (split) -+                           +-> join (join_pair) -> finalize (frame)
#                  +-> process_right (reverse) +
#
# Each step's tool only names a job type (the caroni:CaroniRequirement hint); an
# agent offering that job type does the work. Inputs and outputs travel by name.
cwlVersion: v1.2
class: Workflow

$namespaces:
  caroni: https://caroni.example/cwl#

inputs:
  start_text:
    type: string

outputs:
  result:
    type: string
    outputSource: finalize/framed

steps:
  split:
    run:
      class: CommandLineTool
      hints:
        caroni:CaroniRequirement:
          CaroniJobName: split_text
      inputs:
        text:
          type: string
      outputs:
        left:
          type: string
        right:
          type: string
    in:
      text: start_text
    out: [left, right]

  process_left:
    run:
      class: CommandLineTool
      hints:
        caroni:CaroniRequirement:
          CaroniJobName: shout
      inputs:
        text:
          type: string
      outputs:
        shouted:
          type: string
    in:
      text: split/left
    out: [shouted]

  process_right:
    run:
      class: CommandLineTool
      hints:
        caroni:CaroniRequirement:
          CaroniJobName: reverse
      inputs:
        text:
          type: string
      outputs:
        reversed:
          type: string
    in:
      text: split/right
    out: [reversed]

  join:
    run:
      class: CommandLineTool
      hints:
        caroni:CaroniRequirement:
          CaroniJobName: join_pair
      inputs:
        first:
          type: string
        second:
          type: string
      outputs:
        joined:
          type: string
    in:
      first: process_left/shouted
      second: process_right/reversed
    out: [joined]

  finalize:
    run:
      class: CommandLineTool
      hints:
        caroni:CaroniRequirement:
          CaroniJobName: frame
      inputs:
        text:
          type: string
      outputs:
        framed:
          type: string
    in:
      text: join/joined
    out: [framed]
