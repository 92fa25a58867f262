# Demo template "test_simple": three chained steps.
#
# Each step runs a CommandLineTool that only names a job type (the
# caroni:CaroniRequirement hint); an agent offering that job type does the work,
# so the tools need no command line. Inputs and outputs travel by name.
cwlVersion: v1.2
class: Workflow

$namespaces:
  caroni: https://caroni.example/cwl#

inputs:
  start_message:
    type: string

outputs:
  result:
    type: string
    outputSource: step3/out

steps:
  step1:
    run:
      class: CommandLineTool
      hints:
        caroni:CaroniRequirement:
          CaroniJobName: foojob0
      inputs:
        message:
          type: string
      outputs:
        jobout:
          type: string
    in:
      message: start_message
    out: [jobout]

  step2:
    run:
      class: CommandLineTool
      hints:
        caroni:CaroniRequirement:
          CaroniJobName: foojob1
      inputs:
        text:
          type: string
      outputs:
        outSB:
          type: string
    in:
      text: step1/jobout
    out: [outSB]

  step3:
    run:
      class: CommandLineTool
      hints:
        caroni:CaroniRequirement:
          CaroniJobName: foojob2
      inputs:
        final_text:
          type: string
      outputs:
        out:
          type: string
    in:
      final_text: step2/outSB
    out: [out]
